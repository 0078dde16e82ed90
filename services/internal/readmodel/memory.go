package readmodel

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
)

// Memory is a Store held in memory: the one-process default when no
// database is configured. It is rebuilt by replaying the stream at start.
type Memory struct {
	mu sync.RWMutex // mu guards checkpoint and projects, and everything they point to
	// checkpoint is the stream's life and the sequence of the last
	// applied record.
	checkpoint follow.Checkpoint
	// projects holds each project's rows, by project name.
	projects map[string]*memProject
}

// memProject is one project's rows. Key and deployment ids are unique
// within a project: a create that reuses an id replaces the old row.
type memProject struct {
	keys     map[string]*Key              // by name; DeploymentNames unused
	keyByID  map[string]string            // key id → key name
	deps     map[string]*Deployment       // by name; APIKeys unused
	depByID  map[string]string            // deployment id → deployment name
	links    map[string]map[string]string // deployment name → key name → key id
	keyLinks map[string]map[string]bool   // key id → deployment names
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory Store.
func NewMemory() *Memory {
	return &Memory{projects: make(map[string]*memProject)}
}

// Apply implements Store. Nothing in it can fail half-way, so holding the
// lock for the whole record makes it atomic.
func (m *Memory) Apply(ctx context.Context, rec eventstore.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec.Sequence <= m.checkpoint.Sequence {
		return nil
	}
	for _, ev := range rec.Events {
		m.apply(rec, ev)
	}
	m.checkpoint.Sequence = rec.Sequence
	return nil
}

// Checkpoint implements Store.
func (m *Memory) Checkpoint(ctx context.Context) (follow.Checkpoint, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.checkpoint, nil
}

// Reset implements Store.
func (m *Memory) Reset(ctx context.Context, to eventstore.Identity) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.projects = make(map[string]*memProject)
	m.checkpoint = follow.Checkpoint{Stream: to}
	return nil
}

// GetKey implements Store.
func (m *Memory) GetKey(ctx context.Context, project, name string) (Key, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if p := m.projects[project]; p != nil {
		if k := p.keys[name]; k != nil {
			return p.keyView(k), nil
		}
	}
	return Key{}, fmt.Errorf("%w: key %s/%s", ErrNotFound, project, name)
}

// ListKeys implements Store.
func (m *Memory) ListKeys(ctx context.Context, project string, page Page) ([]Key, error) {
	if err := CheckPage(page); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.projects[project]
	if p == nil {
		return nil, nil
	}
	var out []Key
	for _, name := range pageOf(p.keys, page) {
		out = append(out, p.keyView(p.keys[name]))
	}
	return out, nil
}

// GetDeployment implements Store.
func (m *Memory) GetDeployment(ctx context.Context, project, name string) (Deployment, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if p := m.projects[project]; p != nil {
		if d := p.deps[name]; d != nil {
			return p.deploymentView(d), nil
		}
	}
	return Deployment{}, fmt.Errorf("%w: deployment %s/%s", ErrNotFound, project, name)
}

// ListDeployments implements Store.
func (m *Memory) ListDeployments(ctx context.Context, project string, page Page) ([]Deployment, error) {
	if err := CheckPage(page); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.projects[project]
	if p == nil {
		return nil, nil
	}
	var out []Deployment
	for _, name := range pageOf(p.deps, page) {
		out = append(out, p.deploymentView(p.deps[name]))
	}
	return out, nil
}

// pageOf returns the page's names among the map's keys, in order.
func pageOf[V any](rows map[string]V, page Page) []string {
	var names []string
	for name := range rows {
		if name > page.After {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names[:min(len(names), page.Limit)]
}

// keyView is a copy of k that shares nothing with the store.
func (p *memProject) keyView(k *Key) Key {
	out := *k
	out.ExpiresAt = cloneTime(k.ExpiresAt)
	out.RotatedAt = cloneTime(k.RotatedAt)
	out.PreviousNotAfter = cloneTime(k.PreviousNotAfter)
	out.DeploymentNames = sortedOrNil(slices.Collect(maps.Keys(p.keyLinks[k.ID])))
	return out
}

// deploymentView is a copy of d that shares nothing with the store.
func (p *memProject) deploymentView(d *Deployment) Deployment {
	out := *d
	out.Regions = slices.Clone(d.Regions)
	out.APIKeys = sortedOrNil(slices.Collect(maps.Keys(p.links[d.Name])))
	return out
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

func sortedOrNil(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	slices.Sort(s)
	return s
}

func (m *Memory) project(name string) *memProject {
	p := m.projects[name]
	if p == nil {
		p = &memProject{
			keys:     make(map[string]*Key),
			keyByID:  make(map[string]string),
			deps:     make(map[string]*Deployment),
			depByID:  make(map[string]string),
			links:    make(map[string]map[string]string),
			keyLinks: make(map[string]map[string]bool),
		}
		m.projects[name] = p
	}
	return p
}

// apply applies one event; see docs/read-models.md for the rules.
func (m *Memory) apply(rec eventstore.Record, ev *eventv1.Event) {
	p := m.project(ProjectOf(rec, ev))
	at := EventTime(rec, ev)
	switch pl := ev.GetPayload().(type) {
	case *eventv1.Event_KeyCreated:
		e := pl.KeyCreated
		name := NameOf(rec, ev, e.GetName())
		p.deleteKey(e.GetKeyId())
		if old := p.keys[name]; old != nil {
			p.deleteKey(old.ID)
		}
		k := &Key{
			Project:     ProjectOf(rec, ev),
			Name:        name,
			ID:          e.GetKeyId(),
			Description: e.GetDescription(),
			Hint:        e.GetHint(),
			CreatedAt:   at,
		}
		if e.GetExpiresAt() != nil {
			t := NormalTime(e.GetExpiresAt().AsTime())
			k.ExpiresAt = &t
		}
		p.keys[name] = k
		p.keyByID[k.ID] = name
	case *eventv1.Event_KeyUpdated:
		if k := p.keyWithID(pl.KeyUpdated.GetKeyId()); k != nil {
			k.Description = pl.KeyUpdated.GetDescription()
		}
	case *eventv1.Event_KeyExpiryChanged:
		if k := p.keyWithID(pl.KeyExpiryChanged.GetKeyId()); k != nil {
			k.ExpiresAt = nil
			if x := pl.KeyExpiryChanged.GetExpiresAt(); x != nil {
				t := NormalTime(x.AsTime())
				k.ExpiresAt = &t
			}
		}
	case *eventv1.Event_KeyDeleted:
		p.deleteKey(pl.KeyDeleted.GetKeyId())
	case *eventv1.Event_KeyRotated:
		e := pl.KeyRotated
		if k := p.keyWithID(e.GetKeyId()); k != nil {
			notAfter := NormalTime(e.GetOldSecretNotAfter().AsTime())
			k.PreviousHint, k.PreviousNotAfter = k.Hint, &notAfter
			k.Hint = e.GetHint()
			k.RotatedAt = &at
		}
	case *eventv1.Event_DeploymentCreated:
		e := pl.DeploymentCreated
		name := NameOf(rec, ev, e.GetName())
		p.deleteDeployment(e.GetDeploymentId())
		if old := p.deps[name]; old != nil {
			p.deleteDeployment(old.ID)
		}
		p.unlinkDeployment(name)
		p.deps[name] = &Deployment{
			Project:     ProjectOf(rec, ev),
			Name:        name,
			ID:          e.GetDeploymentId(),
			Model:       e.GetModel(),
			UpstreamURL: e.GetUpstreamUrl(),
			Status:      StatusDeploying,
			CreatedAt:   at,
		}
		if len(e.GetRegions()) > 0 {
			// Regions keep the event's order; nil stands for every region.
			p.deps[name].Regions = slices.Clone(e.GetRegions())
		}
		p.depByID[e.GetDeploymentId()] = name
	case *eventv1.Event_DeploymentStatusChanged:
		e := pl.DeploymentStatusChanged
		status, ok := StatusOf(e.GetStatus())
		if d := p.deploymentWithID(e.GetDeploymentId()); d != nil && ok {
			d.Status = status
			d.StatusReason = e.GetReason()
		}
	case *eventv1.Event_DeploymentAuthEnabled:
		if d := p.deploymentWithID(pl.DeploymentAuthEnabled.GetDeploymentId()); d != nil {
			d.AuthEnabled = true
		}
	case *eventv1.Event_DeploymentAuthDisabled:
		if d := p.deploymentWithID(pl.DeploymentAuthDisabled.GetDeploymentId()); d != nil {
			d.AuthEnabled = false
		}
	case *eventv1.Event_KeyLinked:
		e := pl.KeyLinked
		d := p.deploymentWithID(e.GetDeploymentId())
		k := p.keyWithID(e.GetKeyId())
		if d == nil || k == nil {
			return
		}
		if oldID, ok := p.links[d.Name][k.Name]; ok {
			p.unlink(d.Name, k.Name, oldID)
		}
		if p.links[d.Name] == nil {
			p.links[d.Name] = make(map[string]string)
		}
		p.links[d.Name][k.Name] = k.ID
		if p.keyLinks[k.ID] == nil {
			p.keyLinks[k.ID] = make(map[string]bool)
		}
		p.keyLinks[k.ID][d.Name] = true
	case *eventv1.Event_KeyUnlinked:
		e := pl.KeyUnlinked
		d := p.deploymentWithID(e.GetDeploymentId())
		if d == nil {
			return
		}
		for keyName, keyID := range p.links[d.Name] {
			if keyID == e.GetKeyId() {
				p.unlink(d.Name, keyName, keyID)
			}
		}
	case *eventv1.Event_DeploymentDeleted:
		p.deleteDeployment(pl.DeploymentDeleted.GetDeploymentId())
	}
}

func (p *memProject) keyWithID(id string) *Key {
	name, ok := p.keyByID[id]
	if !ok {
		return nil
	}
	return p.keys[name]
}

func (p *memProject) deploymentWithID(id string) *Deployment {
	name, ok := p.depByID[id]
	if !ok {
		return nil
	}
	return p.deps[name]
}

// deleteKey removes the live key with the id, if any, and its links.
func (p *memProject) deleteKey(id string) {
	for depName := range p.keyLinks[id] {
		for keyName, keyID := range p.links[depName] {
			if keyID == id {
				p.unlink(depName, keyName, keyID)
			}
		}
	}
	delete(p.keyLinks, id)
	if name, ok := p.keyByID[id]; ok {
		delete(p.keys, name)
		delete(p.keyByID, id)
	}
}

// deleteDeployment removes the live deployment with the id, if any, and
// its links.
func (p *memProject) deleteDeployment(id string) {
	name, ok := p.depByID[id]
	if !ok {
		return
	}
	p.unlinkDeployment(name)
	delete(p.deps, name)
	delete(p.depByID, id)
}

// unlinkDeployment removes every link of the deployment name.
func (p *memProject) unlinkDeployment(depName string) {
	for keyName, keyID := range p.links[depName] {
		p.unlink(depName, keyName, keyID)
	}
}

func (p *memProject) unlink(depName, keyName, keyID string) {
	delete(p.links[depName], keyName)
	if len(p.links[depName]) == 0 {
		delete(p.links, depName)
	}
	delete(p.keyLinks[keyID], depName)
	if len(p.keyLinks[keyID]) == 0 {
		delete(p.keyLinks, keyID)
	}
}
