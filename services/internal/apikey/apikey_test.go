package apikey_test

import (
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/infergate/infergate/services/internal/apikey"
)

func TestGenerateIsWellFormedAndUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		s, err := apikey.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if len(s) != apikey.Len || !strings.HasPrefix(s, "ig_") {
			t.Fatalf("secret %q has the wrong shape", s)
		}
		if !apikey.WellFormed(s) {
			t.Fatalf("generated secret %q is not well-formed", s)
		}
		if seen[s] {
			t.Fatalf("secret repeated: %q", s)
		}
		seen[s] = true
	}
}

func TestWellFormedRejects(t *testing.T) {
	t.Parallel()
	good, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := []byte(good)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	tests := map[string]string{
		"empty":            "",
		"wrong prefix":     "sk_" + good[3:],
		"too short":        good[:len(good)-1],
		"too long":         good + "0",
		"bad character":    good[:10] + "-" + good[11:],
		"body changed":     flip(20),
		"checksum changed": flip(len(good) - 1),
		"openai style key": "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",
	}
	for name, s := range tests {
		if apikey.WellFormed(s) {
			t.Errorf("%s: WellFormed(%q) = true", name, s)
		}
	}
}

func TestSumAndHint(t *testing.T) {
	t.Parallel()
	s, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if apikey.Sum(s) != sha256.Sum256([]byte(s)) {
		t.Error("Sum differs from SHA-256")
	}
	h := apikey.Hint(s)
	if h != "ig_…"+s[len(s)-4:] {
		t.Errorf("Hint = %q", h)
	}
}

func TestWellFormedDoesNotAllocate(t *testing.T) {
	s, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = apikey.WellFormed(s); _ = apikey.Sum(s) }); n != 0 {
		t.Errorf("WellFormed+Sum allocate %v times per call", n)
	}
}

func BenchmarkWellFormedAndSum(b *testing.B) {
	s, _ := apikey.Generate()
	b.ReportAllocs()
	for b.Loop() {
		if !apikey.WellFormed(s) {
			b.Fatal("not well-formed")
		}
		_ = apikey.Sum(s)
	}
}

func ExampleHint() {
	fmt.Println(apikey.Hint("ig_" + strings.Repeat("0", 43) + "00x7Qa"))
	// Output: ig_…x7Qa
}
