package authmap

import (
	"encoding/hex"
	"hash/maphash"
)

// nameIndex finds the latest life of a key by project and name: an
// open-addressing table of key numbers (plus one; 0 is empty), compared
// through the key records. Four bytes a slot instead of a Go map's fifty
// or so per key. Only the writer and readers holding Map.mu use it.
type nameIndex struct {
	seed  maphash.Seed
	slots []uint32
	n     int
}

func newNameIndex() *nameIndex {
	return &nameIndex{seed: maphash.MakeSeed(), slots: make([]uint32, 1024)}
}

func (x *nameIndex) hash(project uint32, name string) uint64 {
	return maphash.String(x.seed, name) ^ uint64(project)*0x9e3779b97f4a7c15
}

// get returns the number of the latest key project/name.
func (x *nameIndex) get(m *Map, project uint32, name string) (uint32, bool) {
	for i := slotOf(x.hash(project, name), len(x.slots)); ; {
		v := x.slots[i]
		if v == 0 {
			return 0, false
		}
		if k := m.rec(v - 1); k.project == project && k.name == name {
			return v - 1, true
		}
		if i++; i == len(x.slots) {
			i = 0
		}
	}
}

// put makes num the latest key of its project and name.
func (x *nameIndex) put(m *Map, num uint32) {
	if (x.n+1)*4 > len(x.slots)*3 {
		old := x.slots
		x.slots, x.n = make([]uint32, 2*len(old)), 0
		for _, v := range old {
			if v != 0 {
				x.put(m, v-1)
			}
		}
	}
	k := m.rec(num)
	for i := slotOf(x.hash(k.project, k.name), len(x.slots)); ; {
		v := x.slots[i]
		if v == 0 {
			x.slots[i] = num + 1
			x.n++
			return
		}
		if o := m.rec(v - 1); o.project == k.project && o.name == k.name {
			x.slots[i] = num + 1
			return
		}
		if i++; i == len(x.slots) {
			i = 0
		}
	}
}

// each calls fn with the number of every name's latest key.
func (x *nameIndex) each(fn func(num uint32)) {
	for _, v := range x.slots {
		if v != 0 {
			fn(v - 1)
		}
	}
}

// keyID is a key's id, kept in 16 bytes when it is a canonical lowercase
// UUID (what the key service makes) and as a string otherwise.
type keyID struct {
	uuid   [16]byte
	isUUID bool
	other  string
}

func makeKeyID(s string) keyID {
	if u, ok := parseUUID(s); ok {
		return keyID{uuid: u, isUUID: true}
	}
	return keyID{other: s}
}

func (k keyID) is(s string) bool {
	if !k.isUUID {
		return k.other == s
	}
	u, ok := parseUUID(s)
	return ok && u == k.uuid
}

func (k keyID) String() string {
	if !k.isUUID {
		return k.other
	}
	var b [36]byte
	hex.Encode(b[0:8], k.uuid[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], k.uuid[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], k.uuid[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], k.uuid[8:10])
	b[23] = '-'
	hex.Encode(b[24:], k.uuid[10:])
	return string(b[:])
}

// parseUUID accepts only the canonical lowercase form, so String gives
// back exactly the id it was made from.
func parseUUID(s string) (u [16]byte, ok bool) {
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if s[i] == '-' {
			i++
			continue
		}
		hi, lo := lowerHex(s[i]), lowerHex(s[i+1])
		if hi < 0 || lo < 0 {
			return u, false
		}
		u[j] = byte(hi<<4 | lo)
		i += 2
		j++
	}
	return u, true
}

func lowerHex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
