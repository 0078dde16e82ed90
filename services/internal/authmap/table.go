package authmap

import "sync/atomic"

// table is an open-addressing hash table of immutable entries that one
// writer changes while any number of readers look entries up without a
// lock: a slot holds an atomic pointer, a change stores a new entry in it,
// and growing builds a bigger slot array and swaps it in whole. Entries
// are never removed (a deletion stores a tombstone entry), so linear
// probing never loses an entry a reader is looking for.
type table[K comparable, E any] struct {
	slots atomic.Pointer[[]atomic.Pointer[E]]
	keyOf func(*E) K
	n     int // entries; only the writer touches it
}

const minSlots = 1 << 10

func newTable[K comparable, E any](keyOf func(*E) K) *table[K, E] {
	t := &table[K, E]{keyOf: keyOf}
	s := make([]atomic.Pointer[E], minSlots)
	t.slots.Store(&s)
	return t
}

// get returns the entry with key k, whose hash is h, or nil.
func (t *table[K, E]) get(h uint64, k K) *E {
	slots := *t.slots.Load()
	mask := uint64(len(slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		e := slots[i].Load()
		if e == nil {
			return nil
		}
		if t.keyOf(e) == k {
			return e
		}
	}
}

// put stores e under its key, whose hash is h, replacing the entry with
// the same key. Only one goroutine may call it at a time.
func (t *table[K, E]) put(h uint64, e *E, hashOf func(*E) uint64) {
	slots := *t.slots.Load()
	if (t.n+1)*4 > len(slots)*3 {
		slots = t.grow(slots, hashOf)
	}
	k := t.keyOf(e)
	mask := uint64(len(slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		old := slots[i].Load()
		if old == nil {
			t.n++
			slots[i].Store(e)
			return
		}
		if t.keyOf(old) == k {
			slots[i].Store(e)
			return
		}
	}
}

// grow doubles the slot array. Readers go on using the old array, which no
// longer changes, until the new one is swapped in.
func (t *table[K, E]) grow(old []atomic.Pointer[E], hashOf func(*E) uint64) []atomic.Pointer[E] {
	slots := make([]atomic.Pointer[E], 2*len(old))
	mask := uint64(len(slots) - 1)
	for j := range old {
		e := old[j].Load()
		if e == nil {
			continue
		}
		i := hashOf(e) & mask
		for slots[i].Load() != nil {
			i = (i + 1) & mask
		}
		slots[i].Store(e)
	}
	t.slots.Store(&slots)
	return slots
}

// each calls fn for every entry.
func (t *table[K, E]) each(fn func(*E)) {
	slots := *t.slots.Load()
	for i := range slots {
		if e := slots[i].Load(); e != nil {
			fn(e)
		}
	}
}
