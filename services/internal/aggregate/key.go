package aggregate

import (
	"slices"
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
	// Hash and Hint are the current secret's.
	Hash apikey.Hash
	// RotatedAt is when the secret was last rotated; zero if never.
	RotatedAt time.Time
	// Previous are the secrets rotations replaced, oldest first, each with
	// the time it stops (or stopped) working.
	Previous []OldSecret
}

// OldSecret is a secret a rotation replaced.
type OldSecret struct {
	Hash     apikey.Hash
	Hint     string
	NotAfter time.Time
}

// Rotation limits (see Rotate).
const (
	// DefaultGracePeriod is how long a replaced secret keeps working when
	// the caller does not say.
	DefaultGracePeriod = 24 * time.Hour
	// MaxGracePeriod bounds a grace period: a grace is the time to move
	// clients to the new secret, not a second key.
	MaxGracePeriod = 30 * 24 * time.Hour
	// MaxOldSecretsWorking bounds how many replaced secrets may still work
	// at once, so a script rotating in a loop cannot keep a crowd of
	// secrets alive.
	MaxOldSecretsWorking = 3
)

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
	case *eventv1.Event_KeyExpiryChanged:
		if p.KeyExpiryChanged.GetKeyId() == k.ID {
			k.ExpiresAt = nil
			if x := p.KeyExpiryChanged.GetExpiresAt(); x != nil {
				t := x.AsTime()
				k.ExpiresAt = &t
			}
		}
	case *eventv1.Event_KeyDeleted:
		if p.KeyDeleted.GetKeyId() == k.ID {
			k.Live = false
		}
	case *eventv1.Event_KeyRotated:
		r := p.KeyRotated
		if r.GetKeyId() != k.ID || !k.Live {
			return
		}
		notAfter := r.GetOldSecretNotAfter().AsTime()
		// A rotation never extends an earlier grace, and ends every one
		// by its own end at the latest.
		k.Previous = slices.Clone(k.Previous)
		for i := range k.Previous {
			if k.Previous[i].NotAfter.After(notAfter) {
				k.Previous[i].NotAfter = notAfter
			}
		}
		k.Previous = append(k.Previous, OldSecret{Hash: k.Hash, Hint: k.Hint, NotAfter: notAfter})
		copy(k.Hash[:], r.GetSecretSha256())
		k.Hint = r.GetHint()
		k.RotatedAt = e.GetTime().AsTime()
	}
}

// ValidateGracePeriod checks a rotation's grace period.
func ValidateGracePeriod(field string, grace time.Duration) error {
	if grace < 0 || grace > MaxGracePeriod {
		return invalid(field, "must be between 0 and 720h (30 days)")
	}
	return nil
}

// SecretByHint returns the hash of the key's secret — current or replaced
// — whose hint is hint.
func (k Key) SecretByHint(hint string) (apikey.Hash, bool) {
	if k.Hint == hint {
		return k.Hash, true
	}
	for i := len(k.Previous) - 1; i >= 0; i-- {
		if k.Previous[i].Hint == hint {
			return k.Previous[i].Hash, true
		}
	}
	return apikey.Hash{}, false
}

// NewSecret is the secret a rotation installs: only its hash and hint
// reach the domain.
type NewSecret struct {
	Hash apikey.Hash
	Hint string
}

// Rotate decides a KeyRotated: the key gets the new secret, and its
// current one keeps working for grace (capped by the key's expiry). Older
// replaced secrets still working stop by the same time at the latest, so
// a rotation with no grace leaves only the new secret working — what a
// user rotating a leaked key needs, even during an earlier rotation's
// grace. An expired key cannot be rotated (it would stay expired), and a
// rotation with a grace is refused while MaxOldSecretsWorking replaced
// secrets still work.
func (k Key) Rotate(m Meta, grace time.Duration, s NewSecret) ([]*eventv1.Event, error) {
	if err := ValidateGracePeriod("grace_period", grace); err != nil {
		return nil, err
	}
	if !k.Live {
		return nil, wrapf(ErrNotFound, "key %q", k.Name)
	}
	if k.ExpiresAt != nil && !m.Now.Before(*k.ExpiresAt) {
		return nil, wrapf(ErrFailedPrecondition, "key %q expired at %s; create a new key instead", k.Name, k.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if grace > 0 {
		working := 0
		for _, p := range k.Previous {
			if p.NotAfter.After(m.Now) {
				working++
			}
		}
		if working >= MaxOldSecretsWorking {
			return nil, wrapf(ErrFailedPrecondition, "key %q already has %d replaced secrets in their grace period; rotate with a grace period of 0 to end them", k.Name, working)
		}
	}
	// To the microsecond, as every read model and answer shows it: a
	// secret never works past the time a user was told.
	notAfter := m.Now.Add(grace).Truncate(time.Microsecond)
	if k.ExpiresAt != nil && k.ExpiresAt.Before(notAfter) {
		notAfter = *k.ExpiresAt
	}
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_KEY, k.Name)
	ev.Payload = &eventv1.Event_KeyRotated{KeyRotated: &eventv1.KeyRotated{
		KeyId:             k.ID,
		SecretSha256:      s.Hash[:],
		Hint:              s.Hint,
		PreviousHint:      k.Hint,
		OldSecretNotAfter: timestamppb.New(notAfter),
	}}
	return []*eventv1.Event{ev}, nil
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

// KeyChange is an update of a key: each field left nil is left unchanged.
type KeyChange struct {
	Description *string
	// Expiry, when set, is the new expiry: nil inside means never.
	Expiry **time.Time
}

// NeverExpires is the Expiry of a change that removes a key's expiry.
func NeverExpires() **time.Time {
	var t *time.Time
	return &t
}

// ExpiresAt is the Expiry of a change that sets a key's expiry to t.
func ExpiresAt(t time.Time) **time.Time {
	p := &t
	return &p
}

// ValidateKeyChange checks every field of an update command.
func ValidateKeyChange(c KeyChange, now time.Time) error {
	var errs []error
	if c.Description != nil {
		errs = append(errs, ValidateDescription("description", *c.Description))
	}
	if c.Expiry != nil {
		errs = append(errs, ValidateExpiry("expires_at", *c.Expiry, now))
	}
	return joinErrs(errs...)
}

// Update decides a KeyUpdated when the description changes and a
// KeyExpiryChanged when the expiry does; a change to what the key already
// has (or to nothing) is a no-op. A new expiry must be in the future, as
// at creation; an expired key may be given a new expiry or none, and
// works again from then on.
func (k Key) Update(m Meta, c KeyChange) ([]*eventv1.Event, error) {
	if err := ValidateKeyChange(c, m.Now); err != nil {
		return nil, err
	}
	if !k.Live {
		return nil, wrapf(ErrNotFound, "key %q", k.Name)
	}
	var out []*eventv1.Event
	if c.Description != nil && *c.Description != k.Description {
		ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_KEY, k.Name)
		ev.Payload = &eventv1.Event_KeyUpdated{KeyUpdated: &eventv1.KeyUpdated{KeyId: k.ID, Description: *c.Description}}
		out = append(out, ev)
	}
	if c.Expiry != nil {
		x := *c.Expiry
		same := (x == nil) == (k.ExpiresAt == nil) && (x == nil || x.Equal(*k.ExpiresAt))
		if !same {
			changed := &eventv1.KeyExpiryChanged{KeyId: k.ID}
			if x != nil {
				changed.ExpiresAt = timestamppb.New(*x)
			}
			ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_KEY, k.Name)
			ev.Payload = &eventv1.Event_KeyExpiryChanged{KeyExpiryChanged: changed}
			out = append(out, ev)
		}
	}
	return out, nil
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
