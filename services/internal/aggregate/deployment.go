package aggregate

import (
	"maps"
	"slices"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

// Deployment is the state of one deployment name in a project: its current
// life, if any. Fold its events with Apply.
type Deployment struct {
	// Live is true between DeploymentCreated and DeploymentDeleted.
	Live         bool
	ID           string
	Name         string
	Model        string
	UpstreamURL  string
	Regions      []string
	Status       eventv1.DeploymentStatus
	StatusReason string
	AuthEnabled  bool
	CreatedAt    time.Time
	// Links maps a linked key's name to the id of the key it was linked
	// as. A link whose key has since been deleted is stale: the key id no
	// longer belongs to a live key.
	Links map[string]string
}

// Apply folds one event into the state.
func (d *Deployment) Apply(e *eventv1.Event) {
	switch p := e.GetPayload().(type) {
	case *eventv1.Event_DeploymentCreated:
		c := p.DeploymentCreated
		*d = Deployment{
			Live:        true,
			ID:          c.GetDeploymentId(),
			Name:        c.GetName(),
			Model:       c.GetModel(),
			UpstreamURL: c.GetUpstreamUrl(),
			Regions:     slices.Clone(c.GetRegions()),
			Status:      eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING,
			CreatedAt:   e.GetTime().AsTime(),
			Links:       map[string]string{},
		}
	case *eventv1.Event_DeploymentStatusChanged:
		if p.DeploymentStatusChanged.GetDeploymentId() == d.ID {
			d.Status = p.DeploymentStatusChanged.GetStatus()
			d.StatusReason = p.DeploymentStatusChanged.GetReason()
		}
	case *eventv1.Event_DeploymentAuthEnabled:
		if p.DeploymentAuthEnabled.GetDeploymentId() == d.ID {
			d.AuthEnabled = true
		}
	case *eventv1.Event_DeploymentAuthDisabled:
		if p.DeploymentAuthDisabled.GetDeploymentId() == d.ID {
			d.AuthEnabled = false
		}
	case *eventv1.Event_KeyLinked:
		if p.KeyLinked.GetDeploymentId() == d.ID {
			d.Links[p.KeyLinked.GetKeyName()] = p.KeyLinked.GetKeyId()
		}
	case *eventv1.Event_KeyUnlinked:
		if p.KeyUnlinked.GetDeploymentId() == d.ID && d.Links[p.KeyUnlinked.GetKeyName()] == p.KeyUnlinked.GetKeyId() {
			delete(d.Links, p.KeyUnlinked.GetKeyName())
		}
	case *eventv1.Event_DeploymentDeleted:
		if p.DeploymentDeleted.GetDeploymentId() == d.ID {
			d.Live = false
			d.Links = nil
		}
	}
}

// Clone returns a copy of d that Apply can change without changing d.
func (d Deployment) Clone() Deployment {
	d.Regions = slices.Clone(d.Regions)
	if d.Links != nil {
		d.Links = maps.Clone(d.Links)
	}
	return d
}

// LiveKeys maps key names to the ids of the keys that are live now. The
// service builds it from the keys' own events.
type LiveKeys map[string]string

// EffectiveLinks are the deployment's links whose key is still the live
// key of that name.
func (d Deployment) EffectiveLinks(live LiveKeys) map[string]string {
	out := map[string]string{}
	for name, id := range d.Links {
		if live[name] == id {
			out[name] = id
		}
	}
	return out
}

// NewDeployment describes a deployment to create.
type NewDeployment struct {
	Name        string
	Model       string
	UpstreamURL string
	// Regions to serve in; empty means every region.
	Regions     []string
	AuthEnabled bool
	// Keys to link, by name.
	Keys []string
}

// ValidateNewDeployment checks every field of a create command.
func ValidateNewDeployment(project string, c NewDeployment) error {
	return joinErrs(
		ValidateProject("project", project),
		ValidateDeploymentName("name", c.Name),
		ValidateModel("model", c.Model),
		ValidateUpstreamURL("upstream_url", c.UpstreamURL),
		ValidateNames("regions", c.Regions, ValidateProject),
		ValidateNames("api_keys", c.Keys, ValidateKeyName),
	)
}

// Create decides a DeploymentCreated, then DeploymentAuthEnabled and one
// KeyLinked per key, as one batch. live must hold every key of c.Keys.
func (d Deployment) Create(m Meta, c NewDeployment, live LiveKeys) ([]*eventv1.Event, error) {
	if err := ValidateNewDeployment(m.Project, c); err != nil {
		return nil, err
	}
	if d.Live {
		return nil, wrapf(ErrAlreadyExists, "deployment %q", c.Name)
	}
	if err := requireLive("api_keys", c.Keys, live); err != nil {
		return nil, err
	}
	regions := slices.Clone(c.Regions)
	slices.Sort(regions)
	regions = slices.Compact(regions)
	created := m.event(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, c.Name)
	id := m.NewID()
	created.Payload = &eventv1.Event_DeploymentCreated{DeploymentCreated: &eventv1.DeploymentCreated{
		DeploymentId: id,
		Name:         c.Name,
		Model:        c.Model,
		UpstreamUrl:  c.UpstreamURL,
		Regions:      regions,
	}}
	events := []*eventv1.Event{created}
	fresh := Deployment{Live: true, ID: id, Name: c.Name, Links: map[string]string{}}
	return append(events, fresh.authChanges(m, c.AuthEnabled, c.Keys, live)...), nil
}

// UpdateAuth decides the difference between the deployment's auth toggle
// and links and the wanted ones: KeyLinked, KeyUnlinked and
// DeploymentAuthEnabled/Disabled events, as one batch. The same state
// again decides nothing.
func (d Deployment) UpdateAuth(m Meta, enabled bool, keys []string, live LiveKeys) ([]*eventv1.Event, error) {
	if err := joinErrs(
		ValidateProject("project", m.Project),
		ValidateDeploymentName("name", d.Name),
		ValidateNames("api_keys", keys, ValidateKeyName),
	); err != nil {
		return nil, err
	}
	if !d.Live {
		return nil, wrapf(ErrNotFound, "deployment %q", d.Name)
	}
	if err := requireLive("api_keys", keys, live); err != nil {
		return nil, err
	}
	return d.authChanges(m, enabled, keys, live), nil
}

func (d Deployment) authChanges(m Meta, enabled bool, keys []string, live LiveKeys) []*eventv1.Event {
	var events []*eventv1.Event
	current := d.EffectiveLinks(live)
	want := map[string]bool{}
	for _, name := range keys {
		want[name] = true
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if current[name] != live[name] {
			events = append(events, d.linked(m, name, live[name]))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(current)) {
		if !want[name] {
			events = append(events, d.unlinked(m, name, current[name]))
		}
	}
	// Enabling auth comes after the links, so a reader applying the batch
	// in order never has auth on with the new keys missing.
	return append(events, d.toggle(m, enabled)...)
}

// toggle decides DeploymentAuthEnabled or DeploymentAuthDisabled, or
// nothing when auth already is as wanted.
func (d Deployment) toggle(m Meta, enabled bool) []*eventv1.Event {
	if enabled == d.AuthEnabled {
		return nil
	}
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, d.Name)
	if enabled {
		ev.Payload = &eventv1.Event_DeploymentAuthEnabled{DeploymentAuthEnabled: &eventv1.DeploymentAuthEnabled{DeploymentId: d.ID}}
	} else {
		ev.Payload = &eventv1.Event_DeploymentAuthDisabled{DeploymentAuthDisabled: &eventv1.DeploymentAuthDisabled{DeploymentId: d.ID}}
	}
	return []*eventv1.Event{ev}
}

// SetAuth decides DeploymentAuthEnabled or DeploymentAuthDisabled and
// leaves the links as they are; the toggle it already has decides nothing.
func (d Deployment) SetAuth(m Meta, enabled bool) ([]*eventv1.Event, error) {
	if !d.Live {
		return nil, wrapf(ErrNotFound, "deployment %q", d.Name)
	}
	return d.toggle(m, enabled), nil
}

// Link decides a KeyLinked; a key already linked decides nothing.
func (d Deployment) Link(m Meta, key string, live LiveKeys) ([]*eventv1.Event, error) {
	if err := d.checkLinkCommand(m, key, live); err != nil {
		return nil, err
	}
	if d.EffectiveLinks(live)[key] == live[key] {
		return nil, nil
	}
	return []*eventv1.Event{d.linked(m, key, live[key])}, nil
}

// Unlink decides a KeyUnlinked; a key not linked decides nothing.
func (d Deployment) Unlink(m Meta, key string, live LiveKeys) ([]*eventv1.Event, error) {
	if err := d.checkLinkCommand(m, key, live); err != nil {
		return nil, err
	}
	id, ok := d.EffectiveLinks(live)[key]
	if !ok {
		return nil, nil
	}
	return []*eventv1.Event{d.unlinked(m, key, id)}, nil
}

func (d Deployment) checkLinkCommand(m Meta, key string, live LiveKeys) error {
	if err := joinErrs(
		ValidateProject("project", m.Project),
		ValidateDeploymentName("deployment", d.Name),
		ValidateKeyName("key", key),
	); err != nil {
		return err
	}
	if !d.Live {
		return wrapf(ErrNotFound, "deployment %q", d.Name)
	}
	return requireLive("key", []string{key}, live)
}

// SetStatus decides a DeploymentStatusChanged; the same status decides
// nothing.
func (d Deployment) SetStatus(m Meta, status eventv1.DeploymentStatus, reason string) ([]*eventv1.Event, error) {
	if !d.Live {
		return nil, wrapf(ErrNotFound, "deployment %q", d.Name)
	}
	if status == d.Status && reason == d.StatusReason {
		return nil, nil
	}
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, d.Name)
	ev.Payload = &eventv1.Event_DeploymentStatusChanged{DeploymentStatusChanged: &eventv1.DeploymentStatusChanged{
		DeploymentId: d.ID, Status: status, Reason: reason,
	}}
	return []*eventv1.Event{ev}, nil
}

// Delete decides a DeploymentDeleted.
func (d Deployment) Delete(m Meta) ([]*eventv1.Event, error) {
	if !d.Live {
		return nil, wrapf(ErrNotFound, "deployment %q", d.Name)
	}
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, d.Name)
	ev.Payload = &eventv1.Event_DeploymentDeleted{DeploymentDeleted: &eventv1.DeploymentDeleted{DeploymentId: d.ID}}
	return []*eventv1.Event{ev}, nil
}

func (d Deployment) linked(m Meta, name, id string) *eventv1.Event {
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, d.Name)
	ev.Payload = &eventv1.Event_KeyLinked{KeyLinked: &eventv1.KeyLinked{DeploymentId: d.ID, KeyId: id, KeyName: name}}
	return ev
}

func (d Deployment) unlinked(m Meta, name, id string) *eventv1.Event {
	ev := m.event(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, d.Name)
	ev.Payload = &eventv1.Event_KeyUnlinked{KeyUnlinked: &eventv1.KeyUnlinked{DeploymentId: d.ID, KeyId: id, KeyName: name}}
	return ev
}

func requireLive(field string, keys []string, live LiveKeys) error {
	for _, k := range keys {
		if live[k] == "" {
			return wrapf(ErrNotFound, "%s: key %q", field, k)
		}
	}
	return nil
}

// DeploymentFrom folds a deployment name's events into its state.
func DeploymentFrom(name string, events []*eventv1.Event) Deployment {
	d := Deployment{Name: name}
	for _, e := range events {
		d.Apply(e)
	}
	return d
}
