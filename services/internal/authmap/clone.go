package authmap

import (
	"maps"
	"slices"
)

// Clone returns an independent copy of the map: applying records to one
// does not change the other. It costs O(keys + deployments); the audit
// service uses it to keep checkpoints of a project's history and replay
// forward from the nearest one. Published deployment states are immutable
// (Apply stages private copies), so the copy shares them.
func (m *Map) Clone() *Map {
	m.mu.RLock()
	defer m.mu.RUnlock()
	c := &Map{
		keys:     newKeyTable(),
		deps:     newDepTable(),
		names:    &nameIndex{seed: m.names.seed, slots: append([]uint32(nil), m.names.slots...), n: m.names.n},
		nkeys:    m.nkeys,
		projects: make(map[string]uint32, len(m.projects)),
		projName: append([]string(nil), m.projName...),
		dels:     append([]uint32(nil), m.dels...),
		// Both maps append to their rotations: they must not share spare
		// capacity.
		rots:     slices.Clone(m.rots),
		lastRot:  maps.Clone(m.lastRot),
		depNames: append([][2]string(nil), m.depNames...),
		exps:     slices.Clone(m.exps),
		expNow:   maps.Clone(m.expNow),
	}
	for p, id := range m.projects {
		c.projects[p] = id
	}
	c.recs = make([][]keyRec, len(m.recs))
	for i, chunk := range m.recs {
		c.recs[i] = append([]keyRec(nil), chunk...)
	}
	for num := uint32(0); num < m.nkeys; num++ {
		c.publishKey(num)
	}
	m.deps.each(func(d *depState) { c.deps.put(d) })
	c.applied.Store(m.applied.Load())
	return c
}

// Size is the number of key lives and deployment states the map holds: a
// measure of what a Clone costs.
func (m *Map) Size() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return int(m.nkeys) + m.deps.n
}
