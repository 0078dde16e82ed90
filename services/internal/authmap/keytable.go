package authmap

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"

	"github.com/infergate/infergate/services/internal/apikey"
)

// keyTable finds a key by the SHA-256 of its secret. It is an
// open-addressing table whose slots hold, inline, everything a decision
// needs about a key — the hash, its number, project, expiry and deleted
// state — so a lookup costs one cache miss, not a pointer chase. Slots
// are made of atomic words: one writer stores, readers load, and the Map's
// sequence lock tells a reader whose loads overlapped a store to look
// again. Entries are never removed (a deleted key stays, marked), so
// linear probing never loses one.
type keyTable struct {
	slots atomic.Pointer[[]keySlot]
	n     int // used slots; only the writer touches it
}

type keySlot struct {
	sum  [4]atomic.Uint64 // the secret's SHA-256
	meta atomic.Uint64    // 0: empty; else packMeta
	exp  atomic.Int64     // Unix nanoseconds; 0: never
}

// keyInfo is what a decision reads about a key.
type keyInfo struct {
	num     uint32
	project uint32
	deleted bool
	expires int64
}

// packMeta keeps a key's number, project and deleted flag in one word;
// bit 1 is always set, so a used slot's word is never 0.
func packMeta(k keyInfo) uint64 {
	m := uint64(k.num)<<32 | uint64(k.project&(1<<30-1))<<2 | 2
	if k.deleted {
		m |= 1
	}
	return m
}

func unpackMeta(m uint64, exp int64) keyInfo {
	return keyInfo{num: uint32(m >> 32), project: uint32(m>>2) & (1<<30 - 1), deleted: m&1 != 0, expires: exp}
}

func sumWords(h *apikey.Hash) [4]uint64 {
	return [4]uint64{
		binary.LittleEndian.Uint64(h[0:]),
		binary.LittleEndian.Uint64(h[8:]),
		binary.LittleEndian.Uint64(h[16:]),
		binary.LittleEndian.Uint64(h[24:]),
	}
}

// slotOf maps a hash word onto [0, n) without a division; SHA-256 output is
// uniform, and nobody can aim a secret's hash at a slot.
func slotOf(w uint64, n int) int {
	hi, _ := bits.Mul64(w, uint64(n))
	return int(hi)
}

func newKeyTable() *keyTable {
	t := &keyTable{}
	s := make([]keySlot, 1024)
	t.slots.Store(&s)
	return t
}

// get returns the key whose secret hashes to w.
func (t *keyTable) get(w *[4]uint64) (keyInfo, bool) {
	slots := *t.slots.Load()
	for i := slotOf(w[0], len(slots)); ; {
		s := &slots[i]
		m := s.meta.Load()
		if m == 0 {
			return keyInfo{}, false
		}
		if s.sum[0].Load() == w[0] && s.sum[1].Load() == w[1] && s.sum[2].Load() == w[2] && s.sum[3].Load() == w[3] {
			return unpackMeta(m, s.exp.Load()), true
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

// put stores k under the hash w, replacing what was there. Only one
// goroutine may call it at a time, inside the sequence lock.
func (t *keyTable) put(w *[4]uint64, k keyInfo) {
	slots := *t.slots.Load()
	if (t.n+1)*5 > len(slots)*4 {
		slots = t.grow(slots)
	}
	for i := slotOf(w[0], len(slots)); ; {
		s := &slots[i]
		if s.meta.Load() == 0 {
			t.n++
			store(s, w, k)
			return
		}
		if s.sum[0].Load() == w[0] && s.sum[1].Load() == w[1] && s.sum[2].Load() == w[2] && s.sum[3].Load() == w[3] {
			store(s, w, k)
			return
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

func store(s *keySlot, w *[4]uint64, k keyInfo) {
	for j := range w {
		s.sum[j].Store(w[j])
	}
	s.exp.Store(k.expires)
	s.meta.Store(packMeta(k))
}

// grow makes the table 1.5 times bigger (so it stays 53–80% full, which
// linear probing over inline slots handles well, for less memory than
// doubling). Readers go on with the old slots until the new are swapped in.
func (t *keyTable) grow(old []keySlot) []keySlot {
	slots := make([]keySlot, len(old)*3/2)
	for j := range old {
		m := old[j].meta.Load()
		if m == 0 {
			continue
		}
		var w [4]uint64
		for k := range w {
			w[k] = old[j].sum[k].Load()
		}
		i := slotOf(w[0], len(slots))
		for slots[i].meta.Load() != 0 {
			if i++; i == len(slots) {
				i = 0
			}
		}
		store(&slots[i], &w, unpackMeta(m, old[j].exp.Load()))
	}
	t.slots.Store(&slots)
	return slots
}
