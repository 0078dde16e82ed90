// Package apikey is the format of infergate API-key secrets:
//
//	ig_ + 43 base62 characters (256 random bits) + 6 base62 characters of
//	CRC32 (IEEE) over everything before them
//
// The fixed prefix lets secret scanners find leaked keys, and the checksum
// lets a gateway reject garbage without a lookup. Only SHA-256(secret) is
// ever stored or published.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
	"unsafe"
)

const (
	// Prefix starts every secret.
	Prefix = "ig_"
	// bodyLen is 256 bits in base62: ceil(256 / log2(62)) = 43.
	bodyLen     = 43
	checksumLen = 6
	// Len is the length of every well-formed secret.
	Len = len(Prefix) + bodyLen + checksumLen

	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// ErrMalformed means a string is not a well-formed infergate secret.
var ErrMalformed = errors.New("apikey: malformed key")

// Hash is the SHA-256 of a secret: the only form in which a key is stored.
type Hash = [sha256.Size]byte

// Generate returns a new secret with 256 bits from crypto/rand.
func Generate() (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("apikey: random: %w", err)
	}
	buf := make([]byte, 0, Len)
	buf = append(buf, Prefix...)
	buf = appendBase62(buf, new(big.Int).SetBytes(raw[:]), bodyLen)
	buf = appendBase62(buf, new(big.Int).SetUint64(uint64(crc32.ChecksumIEEE(buf))), checksumLen)
	return string(buf), nil
}

// appendBase62 appends n in base62, left-padded with '0' to width digits.
func appendBase62(dst []byte, n *big.Int, width int) []byte {
	digits := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		digits[i] = alphabet[mod.Int64()]
	}
	return append(dst, digits...)
}

// WellFormed reports whether s has the prefix, length, alphabet and
// checksum of a secret. It does not allocate.
func WellFormed(s string) bool {
	if len(s) != Len || s[:len(Prefix)] != Prefix {
		return false
	}
	// Table lookups ORed together: no branch per character, so random
	// keys cost no mispredictions. An invalid character's value is -1,
	// which makes the OR negative.
	var or int8
	for i := len(Prefix); i < Len; i++ {
		or |= base62Values[s[i]]
	}
	if or < 0 {
		return false
	}
	var sum uint64
	for i := Len - checksumLen; i < Len; i++ {
		sum = sum*62 + uint64(base62Values[s[i]])
	}
	return sum == uint64(crc32.ChecksumIEEE(bytesOf(s[:Len-checksumLen])))
}

// base62Values maps a byte to its base62 value, or -1.
var base62Values = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := range len(alphabet) {
		t[alphabet[i]] = int8(i)
	}
	return t
}()

// bytesOf views s as bytes without copying; the callee must not keep or
// modify them. It keeps the gateway's decision path allocation-free.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

// Sum returns SHA-256(secret) without allocating.
func Sum(secret string) Hash {
	return sha256.Sum256(bytesOf(secret))
}

// Hint is a short non-secret reminder of a secret, such as "ig_…x7Qa": the
// prefix and the last four characters, which are checksum characters and
// reveal none of the random part.
func Hint(secret string) string {
	if len(secret) < 4 {
		return Prefix + "…"
	}
	return Prefix + "…" + secret[len(secret)-4:]
}
