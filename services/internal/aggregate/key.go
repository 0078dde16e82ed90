package aggregate

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/apikey"
)

// Meta is who issues a command, when, and how new ids are made.
type Meta struct {
	Actor   string
	Project string
	Now     time.Time
	// NewID makes event and aggregate ids (UUIDs in production).
	NewID func() string
}

func (m Meta) event(typ eventv1.AggregateType, name string) *eventv1.Event {
	return &eventv1.Event{
		Id:        m.NewID(),
		Time:      timestamppb.New(m.Now),
		Actor:     m.Actor,
		Project:   m.Project,
		Aggregate: &eventv1.Aggregate{Type: typ, Name: name},
	}
}

// Key is the state of one key name in a project: its current life, if
// any. Fold its events with Apply.
type Key struct {
	// Live is true between KeyCreated and KeyDeleted.
	Live        bool
	ID          string
	Name        string
	Description string
	Hint        string
	ExpiresAt   *time.Time
	CreatedAt   time.Time
	Hash        apikey.Hash
}

// Apply folds one event into the state.
func (k *Key) Apply(e *eventv1.Event) {
	switch p := e.GetPayload().(type) {
	case *eventv1.Event_KeyCreated:
		c := p.KeyCreated
		*k = Key{
			Live:        true,
			ID:          c.GetKeyId(),
			Name:        c.GetName(),
			Description: c.GetDescription(),
			Hint:        c.GetHint(),
			CreatedAt:   e.GetTime().AsTime(),
		}
		copy(k.Hash[:], c.GetSecretSha256())
		if c.GetExpiresAt() != nil {
			t := c.GetExpiresAt().AsTime()
			k.ExpiresAt = &t
		}
	case *eventv1.Event_KeyUpdated:
		if p.KeyUpdated.GetKeyId() == k.ID {
			k.Description = p.KeyUpdated.GetDescription()
		}
	case *eventv1.Event_KeyDeleted:
		if p.KeyDeleted.GetKeyId() == k.ID {
			k.Live = false
		}
	}
}

// NewKey describes a key to create. The secret itself never reaches the
// domain: only its hash and hint do.
type NewKey struct {
	Name        string
	Description string
	ExpiresAt   *time.Time
	Hash        apikey.Hash
	Hint        string
}

// ValidateNewKey checks every field of a create command.
func ValidateNewKey(project string, c NewKey, now time.Time) error {
	return joinErrs(
		ValidateProject("project", project),
		ValidateKeyName("name", c.Name),
		ValidateDescription("description", c.Description),
		ValidateExpiry("expires_at", c.ExpiresAt, now),
	)
}

// Create decides a KeyCreated, refusing a name that is in use.
func (k Key) Create(m Meta, c NewKey) ([]*eventv1.Event, error) {
	if err := ValidateNewKey(m.Project, c, m.Now); err != nil {
		return nil, err
	}
	if k.Live {
		return nil, wrapf(ErrAlreadyExists, "key %q", c.Name)
	}
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_KEY, c.Name)
	created := &eventv1.KeyCreated{
		KeyId:        m.NewID(),
		Name:         c.Name,
		Description:  c.Description,
		SecretSha256: c.Hash[:],
		Hint:         c.Hint,
	}
	if c.ExpiresAt != nil {
		created.ExpiresAt = timestamppb.New(*c.ExpiresAt)
	}
	ev.Payload = &eventv1.Event_KeyCreated{KeyCreated: created}
	return []*eventv1.Event{ev}, nil
}

// Update decides a KeyUpdated; the same description again is a no-op.
func (k Key) Update(m Meta, description string) ([]*eventv1.Event, error) {
	if err := ValidateDescription("description", description); err != nil {
		return nil, err
	}
	if !k.Live {
		return nil, wrapf(ErrNotFound, "key %q", k.Name)
	}
	if description == k.Description {
		return nil, nil
	}
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_KEY, k.Name)
	ev.Payload = &eventv1.Event_KeyUpdated{KeyUpdated: &eventv1.KeyUpdated{KeyId: k.ID, Description: description}}
	return []*eventv1.Event{ev}, nil
}

// Delete decides a KeyDeleted.
func (k Key) Delete(m Meta) ([]*eventv1.Event, error) {
	if !k.Live {
		return nil, wrapf(ErrNotFound, "key %q", k.Name)
	}
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_KEY, k.Name)
	ev.Payload = &eventv1.Event_KeyDeleted{KeyDeleted: &eventv1.KeyDeleted{KeyId: k.ID}}
	return []*eventv1.Event{ev}, nil
}

// KeyFrom folds a key name's events into its state.
func KeyFrom(name string, events []*eventv1.Event) Key {
	k := Key{Name: name}
	for _, e := range events {
		k.Apply(e)
	}
	return k
}
