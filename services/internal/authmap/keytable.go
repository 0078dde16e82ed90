package authmap

import (
	"encoding/binary"
	"math/bits"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/infergate/infergate/services/internal/apikey"
)

// keyTable finds a key by the SHA-256 of its secret. It is an
// open-addressing table whose slots hold, inline, everything a decision
// needs about a key's secret — 128 bits of the hash, the key's number,
// project, expiry and deleted state — so a lookup costs one cache miss, not a pointer
// chase. Slots are made of atomic words: one writer stores, readers load,
// and the Map's sequence lock tells a reader whose loads overlapped a
// store to look again. Entries are never removed (a deleted key stays,
// marked), so linear probing never loses one. A rotated key has a slot per
// secret, all with its number: a replaced secret's slot is marked rotated
// and its expiry is the end of its grace period, so the decision that
// refuses an expired key refuses it too, at the same cost.
//
// A slot is 32 bytes and the slot array is 32-byte aligned, so a probe
// reads one cache line, and two neighbouring slots share it. A big table
// lives outside the Go heap, in memory mapped with transparent huge pages
// where the system has them (see slotMem): at a million keys the table is
// ~48 MiB, and with 4 KiB pages nearly every lookup also missed the TLB.
//
// Why 128 bits of the hash are enough: the table answers "which key has
// this secret", and a wrong answer would need a secret other than the
// key's whose SHA-256 agrees with the key's in the 128 bits kept. Finding
// one is a second preimage on a 128-bit truncation of SHA-256: ~2^128
// hash computations for a chosen key, ~2^128/n to hit any one of n keys
// (2^108 at a million keys) — the same margin as guessing a 128-bit
// secret, and far beyond reach. Secrets hold 256 random bits (apikey), so
// two keys agreeing by accident is a 2^-129·n² event (2^-89 at a million
// keys); even a birthday collision (~2^64 work) needs an attacker who
// chooses both secrets, and would only let one of them act as the other.
// The full hash stays in the key's keyRec, for the snapshot and for
// CheckKey.
type keyTable struct {
	slots atomic.Pointer[[]keySlot]
	n     int      // used slots; only the writer touches it
	mem   *slotMem // the off-heap memory of the slots; nil while on the Go heap
	// offHeapMin is the smallest slot array kept off the Go heap, in
	// bytes (offHeapMin; tests lower it).
	offHeapMin int
}

// keySlot is one key, in 32 bytes: 128 bits of its hash, packMeta and the
// expiry. It holds no pointers, so it may live outside the Go heap.
type keySlot struct {
	sum  [2]atomic.Uint64 // the first 128 bits of the secret's SHA-256
	meta atomic.Uint64    // 0: empty; else packMeta
	exp  atomic.Int64     // Unix nanoseconds; 0: never
}

const keySlotSize = int(unsafe.Sizeof(keySlot{}))

// keyInfo is what a decision reads about a key.
type keyInfo struct {
	num     uint32
	project uint32
	deleted bool
	// rotated: this is a secret a rotation replaced, and expires is the
	// end of its grace period (earlier than the key's own expiry).
	rotated bool
	expires int64
}

// packMeta keeps a key's number, project and deleted and rotated flags
// in one word; bit 1 is always set, so a used slot's word is never 0.
func packMeta(k keyInfo) uint64 {
	m := uint64(k.num)<<32 | uint64(k.project&(1<<29-1))<<3 | 2
	if k.deleted {
		m |= 1
	}
	if k.rotated {
		m |= 4
	}
	return m
}

func unpackMeta(m uint64, exp int64) keyInfo {
	return keyInfo{num: uint32(m >> 32), project: uint32(m>>3) & (1<<29 - 1), deleted: m&1 != 0, rotated: m&4 != 0, expires: exp}
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
	return newKeyTableOffHeap(offHeapMin)
}

func newKeyTableOffHeap(min int) *keyTable {
	t := &keyTable{offHeapMin: min}
	s := t.alloc(1024)
	t.slots.Store(&s)
	return t
}

// get returns the key whose secret hashes to w (compared on w[0] and
// w[1]; see keyTable).
func (t *keyTable) get(w *[4]uint64) (keyInfo, bool) {
	slots := *t.slots.Load()
	for i := slotOf(w[0], len(slots)); ; {
		s := &slots[i]
		m := s.meta.Load()
		if m == 0 {
			runtime.KeepAlive(t) // t owns the slots' memory
			return keyInfo{}, false
		}
		if s.sum[0].Load() == w[0] && s.sum[1].Load() == w[1] {
			k := unpackMeta(m, s.exp.Load())
			runtime.KeepAlive(t)
			return k, true
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
		if s.sum[0].Load() == w[0] && s.sum[1].Load() == w[1] {
			store(s, w, k)
			return
		}
		if i++; i == len(slots) {
			i = 0
		}
	}
}

func store(s *keySlot, w *[4]uint64, k keyInfo) {
	s.sum[0].Store(w[0])
	s.sum[1].Store(w[1])
	s.exp.Store(k.expires)
	s.meta.Store(packMeta(k))
}

// grow makes the table 1.5 times bigger (so it stays 53–80% full, which
// linear probing over inline slots handles well, for less memory than
// doubling). Readers go on with the old slots until the new are swapped
// in; the old slots' memory is then released (see slotMem.retire), which
// a reader still probing them survives: the put that grew the table is
// inside the sequence lock, so that reader decides again.
func (t *keyTable) grow(old []keySlot) []keySlot {
	slots := t.alloc(len(old) * 3 / 2)
	for j := range old {
		m := old[j].meta.Load()
		if m == 0 {
			continue
		}
		w := [4]uint64{old[j].sum[0].Load(), old[j].sum[1].Load()}
		i := slotOf(w[0], len(slots))
		for slots[i].meta.Load() != 0 {
			if i++; i == len(slots) {
				i = 0
			}
		}
		store(&slots[i], &w, unpackMeta(m, old[j].exp.Load()))
	}
	t.slots.Store(&slots)
	if t.mem != nil {
		t.mem.retire(old)
	}
	return slots
}

// alloc returns n zeroed slots: off the Go heap, on huge pages, when the
// table is big enough for that to pay and the system allows it; else on
// the Go heap.
func (t *keyTable) alloc(n int) []keySlot {
	if n*keySlotSize >= t.offHeapMin {
		if t.mem == nil {
			t.mem = &slotMem{}
			// The mappings go when the table does. Readers keep t alive
			// while they probe (get), so none can be probing then.
			runtime.AddCleanup(t, (*slotMem).free, t.mem)
		}
		if s := t.mem.alloc(n); s != nil {
			return s
		}
	}
	return make([]keySlot, n)
}

// offHeapBytes is the memory the table holds outside the Go heap, for the
// benchmarks' bytes-per-key figures.
func (t *keyTable) offHeapBytes() int {
	if t.mem == nil {
		return 0
	}
	return t.mem.resident()
}
