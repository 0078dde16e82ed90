package readmodel

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
)

// UsageMemory is the usage projection in memory: the one-process default
// when no database is configured, rebuilt by replaying the usage stream.
type UsageMemory struct {
	mu sync.RWMutex // mu guards the fields below and what they point to
	// checkpoint is the usage stream's life and the last sequence applied.
	checkpoint follow.Checkpoint
	projects   map[string]*usageProject
	// senders is the last flush sequence applied per gateway run.
	senders map[string]uint64
}

type usagePair struct{ deployment, key string }

type usageBucket struct {
	usagePair
	minute int64
}

type usageProject struct {
	buckets map[usageBucket]*Counts
	last    map[usagePair]int64 // Unix ns
}

var _ UsageStore = (*UsageMemory)(nil)

// NewUsageMemory returns an empty usage projection in memory.
func NewUsageMemory() *UsageMemory {
	return &UsageMemory{projects: map[string]*usageProject{}, senders: map[string]uint64{}}
}

// Checkpoint implements follow.Consumer.
func (m *UsageMemory) Checkpoint(ctx context.Context) (follow.Checkpoint, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.checkpoint, nil
}

// Reset implements follow.Consumer.
func (m *UsageMemory) Reset(ctx context.Context, to eventstore.Identity) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.projects, m.senders = map[string]*usageProject{}, map[string]uint64{}
	m.checkpoint = follow.Checkpoint{Stream: to}
	return nil
}

// Apply implements follow.Consumer: one flush, once. A flush that does
// not decode is skipped.
func (m *UsageMemory) Apply(ctx context.Context, rec eventstore.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec.Sequence <= m.checkpoint.Sequence {
		return nil
	}
	m.checkpoint.Sequence = rec.Sequence
	f, err := DecodeFlush(rec)
	if errors.Is(err, ErrInvalidUsage) {
		return nil
	}
	sender := Sender(f)
	if f.GetSequence() <= m.senders[sender] {
		return nil // stored twice: applied already
	}
	m.senders[sender] = f.GetSequence()
	for _, r := range f.GetRows() {
		p := m.projects[r.GetProject()]
		if p == nil {
			p = &usageProject{buckets: map[usageBucket]*Counts{}, last: map[usagePair]int64{}}
			m.projects[r.GetProject()] = p
		}
		pair := usagePair{r.GetDeployment(), r.GetKey()}
		b := usageBucket{pair, r.GetMinute()}
		c := p.buckets[b]
		if c == nil {
			c = &Counts{}
			p.buckets[b] = c
		}
		c.Add(CountsOf(r.GetCounts()))
		p.last[pair] = max(p.last[pair], r.GetLastUsedUnixNano())
	}
	return nil
}

// Usage implements UsageStore.
func (m *UsageMemory) Usage(ctx context.Context, f UsageFilter) ([]UsageRow, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.projects[f.Project]
	if p == nil {
		return nil, nil
	}
	type group struct {
		start time.Time
		name  string
	}
	sums := map[group]*Counts{}
	since, until := f.Since.Unix(), f.Until.Unix()
	for b, c := range p.buckets {
		if (f.Key != "" && b.key != f.Key) || (f.Deployment != "" && b.deployment != f.Deployment) ||
			b.minute < since || b.minute >= until {
			continue
		}
		g := group{f.StepStart(b.minute), b.deployment}
		if f.By == ByKey {
			g.name = b.key
		}
		s := sums[g]
		if s == nil {
			s = &Counts{}
			sums[g] = s
		}
		s.Add(*c)
	}
	rows := make([]UsageRow, 0, len(sums))
	for g, c := range sums {
		rows = append(rows, UsageRow{Start: g.start, Name: g.name, Counts: *c})
	}
	return rows, nil
}

// LastUsed implements UsageStore.
func (m *UsageMemory) LastUsed(ctx context.Context, project string) ([]LastUse, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	p := m.projects[project]
	if p == nil {
		return nil, nil
	}
	out := make([]LastUse, 0, len(p.last))
	for pair, ns := range p.last {
		out = append(out, LastUse{Deployment: pair.deployment, Key: pair.key, At: time.Unix(0, ns).UTC()})
	}
	return out, nil
}
