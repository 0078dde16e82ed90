package eventstore

import (
	"container/list"
	"sync"
)

// aggCache keeps the records of recently loaded aggregates, so loading an
// aggregate again reads only what was appended since. It is always checked
// against the stream (the subject's last sequence), never trusted alone.
type aggCache struct {
	max int

	mu sync.Mutex // mu protects the fields below
	// bySubject indexes order's elements.
	bySubject map[string]*list.Element
	// order holds *cacheEntry, most recently used first.
	order *list.List
}

type cacheEntry struct {
	subject string
	records []Record
	version uint64
}

func newAggCache(max int) *aggCache {
	return &aggCache{max: max, bySubject: map[string]*list.Element{}, order: list.New()}
}

// get returns the cached records and version of a subject. The slice must
// not be appended to in place, except by extend.
func (c *aggCache) get(subject string) ([]Record, uint64) {
	if c.max <= 0 {
		return nil, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.bySubject[subject]
	if !ok {
		return nil, 0
	}
	c.order.MoveToFront(el)
	e := el.Value.(*cacheEntry)
	return e.records, e.version
}

// extend returns base (the records of subject up to baseVersion, as get
// returned them) followed by fresh, up to version, and caches that. When
// the cached entry is still base, fresh is appended to it in place —
// amortized O(len(fresh)), not a copy of the whole history: slices handed
// out before end at their own length and capacity, so what is written
// past them is invisible to them.
func (c *aggCache) extend(subject string, base []Record, baseVersion uint64, fresh []Record, version uint64) []Record {
	if c.max > 0 && base != nil {
		c.mu.Lock()
		if el, ok := c.bySubject[subject]; ok {
			e := el.Value.(*cacheEntry)
			if e.version == baseVersion && len(e.records) == len(base) {
				e.records = append(e.records, fresh...)
				e.version = version
				c.order.MoveToFront(el)
				records := e.records
				c.mu.Unlock()
				return records
			}
		}
		c.mu.Unlock()
	}
	records := make([]Record, 0, len(base)+len(fresh))
	records = append(append(records, base...), fresh...)
	c.put(subject, records, version)
	return records
}

// put stores records at version, unless a newer version is cached.
func (c *aggCache) put(subject string, records []Record, version uint64) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.bySubject[subject]; ok {
		e := el.Value.(*cacheEntry)
		if e.version < version {
			e.records, e.version = records, version
		}
		c.order.MoveToFront(el)
		return
	}
	c.bySubject[subject] = c.order.PushFront(&cacheEntry{subject: subject, records: records, version: version})
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.bySubject, oldest.Value.(*cacheEntry).subject)
	}
}
