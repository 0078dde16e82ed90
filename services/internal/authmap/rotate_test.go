package authmap_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/authmap"
)

// TestRotation: a rotated key keeps its links; its new secret works at
// once, the one it replaced until the end of its grace period and not
// after, at the decision's own clock, with no further event.
func TestRotation(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	seq := uint64(0)
	apply := func(evs ...*eventv1.Event) {
		seq++
		m.Apply(seq, evs)
	}
	for _, r := range base() {
		apply(r...)
	}
	evTime := time.Unix(1_700_000_000, 0) // the builders' event time
	secretA2, secretA3, secretA4 := mustSecret(), mustSecret(), mustSecret()
	decide := func(secret string, at time.Time) authmap.Reason {
		return m.Decide(proj, dep, "", secret, at).Reason
	}
	checkHash := func(secret string, at time.Time) authmap.Reason {
		return m.CheckHash(proj, dep, apikey.Sum(secret), at)
	}
	want := func(what string, got, want authmap.Reason) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}

	apply(keyRotated(proj, "alpha", "ka", secretA2, t0.Add(time.Hour)))
	want("new secret", decide(secretA2, t0), authmap.ReasonLinked)
	want("old secret in its grace", decide(secretA, t0.Add(time.Hour-time.Nanosecond)), authmap.ReasonLinked)
	want("old secret after its grace", decide(secretA, t0.Add(time.Hour)), authmap.ReasonRotated)
	want("old secret after its grace (CheckHash)", checkHash(secretA, t0.Add(time.Hour)), authmap.ReasonRotated)
	want("new secret later", decide(secretA2, t0.Add(1000*time.Hour)), authmap.ReasonLinked)
	want("CheckKey answers for the current secret", m.CheckKey(proj, dep, "alpha", t0.Add(2*time.Hour)), authmap.ReasonLinked)
	if d := m.Decide(proj, dep, "", secretA, t0.Add(time.Hour)); d.Result != authmap.ResultInvalidAPIKey {
		t.Errorf("a client sees %v for a rotated-out secret, want invalid_api_key", d.Result)
	}

	// A second rotation: the secret it replaces gets the new grace; the
	// first one never outlives it.
	apply(keyRotated(proj, "alpha", "ka", secretA3, t0.Add(30*time.Minute)))
	want("first secret ends with the second grace", decide(secretA, t0.Add(30*time.Minute)), authmap.ReasonRotated)
	want("second secret in its grace", decide(secretA2, t0.Add(29*time.Minute)), authmap.ReasonLinked)
	want("second secret after its grace", decide(secretA2, t0.Add(30*time.Minute)), authmap.ReasonRotated)
	want("third secret", decide(secretA3, t0.Add(30*time.Minute)), authmap.ReasonLinked)

	// A rotation with no grace (not after its own time) ends every old
	// secret at once, whatever the clock of the one deciding says.
	apply(keyRotated(proj, "alpha", "ka", secretA4, evTime))
	for _, s := range []string{secretA, secretA2, secretA3} {
		want("old secret after a rotation with no grace", decide(s, evTime.Add(-time.Hour)), authmap.ReasonRotated)
	}
	want("fourth secret", decide(secretA4, t0), authmap.ReasonLinked)

	// The key's expiry bounds every secret; deletion ends them all.
	secretB2 := mustSecret()
	apply(keyRotated(proj, "bravo", "kb", secretB2, t0.Add(5*time.Hour)))
	want("old secret past the key's expiry", checkHash(secretB, t0.Add(time.Hour)), authmap.ReasonExpired)
	want("new secret past the key's expiry", checkHash(secretB2, t0.Add(time.Hour)), authmap.ReasonExpired)
	want("old secret of an unlinked key", checkHash(secretB, t0), authmap.ReasonNotLinked)

	// A rotation naming another life of the key changes nothing.
	apply(keyRotated(proj, "alpha", "not-ka", mustSecret(), t0))
	want("after a stale rotation", decide(secretA4, t0), authmap.ReasonLinked)

	// Save and restore keep it all.
	var buf bytes.Buffer
	if _, err := m.Save(&buf); err != nil {
		t.Fatal(err)
	}
	r := authmap.New()
	if err := r.RestoreBytes(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	c := m.Clone()
	for _, s := range []string{secretA, secretA2, secretA3, secretA4, secretB, secretB2} {
		for _, at := range []time.Time{evTime, t0, t0.Add(45 * time.Minute), t0.Add(3 * time.Hour)} {
			if a, b, cl := decide(s, at), r.Decide(proj, dep, "", s, at).Reason, c.Decide(proj, dep, "", s, at).Reason; a != b || a != cl {
				t.Errorf("at %v: map %v, restored %v, clone %v", at, a, b, cl)
			}
		}
	}

	apply(keyDeleted(proj, "alpha", "ka"))
	for _, s := range []string{secretA, secretA2, secretA3, secretA4} {
		want("a secret of a deleted key", decide(s, evTime), authmap.ReasonDeleted)
	}
	// The clone did not see the deletion.
	if got := c.Decide(proj, dep, "", secretA4, t0).Reason; got != authmap.ReasonLinked {
		t.Errorf("clone after the original's deletion: %v", got)
	}
}

// TestDecideOnRotatedKeyDoesNotAllocate: a replaced secret, in its grace
// and after it, costs a decision no allocation either.
func TestDecideOnRotatedKeyDoesNotAllocate(t *testing.T) {
	m := authmap.New()
	for i, r := range base() {
		m.Apply(uint64(i+1), r)
	}
	secretA2 := mustSecret()
	m.Apply(5, []*eventv1.Event{keyRotated(proj, "alpha", "ka", secretA2, t0.Add(time.Hour))})
	for _, key := range []string{secretA, secretA2} {
		for _, at := range []time.Time{t0, t0.Add(time.Hour)} {
			if n := testing.AllocsPerRun(100, func() { _ = m.Decide(proj, dep, "local", key, at) }); n != 0 {
				t.Errorf("Decide with key %.8q… at %v allocates %v times", key, at, n)
			}
		}
	}
}

// TestVersion1SnapshotRefused: a snapshot of the format before rotations
// is refused cleanly (the gateway then replays the stream), never read as
// a map without rotations.
func TestVersion1SnapshotRefused(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	m.Apply(1, base()[0])
	var buf bytes.Buffer
	if _, err := m.Save(&buf); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	magic := len("infergate-authmap\x00")
	if b[magic] != 2 {
		t.Fatalf("version byte %d, want 2", b[magic])
	}
	b[magic] = 1
	body := b[:len(b)-4]
	binary.BigEndian.PutUint32(b[len(body):], crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	r := authmap.New()
	if err := r.RestoreBytes(b); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Errorf("restoring a version 1 snapshot: %v, want it refused for its version", err)
	}
	if err := r.RestoreBytes(b); !errors.Is(err, authmap.ErrBadSnapshot) {
		t.Fatalf("restoring a version 1 snapshot: %v, want ErrBadSnapshot", err)
	}
	if _, err := authmap.SnapshotSequence(bytes.NewReader(b)); !errors.Is(err, authmap.ErrBadSnapshot) {
		t.Errorf("SnapshotSequence of a version 1 snapshot: %v, want ErrBadSnapshot", err)
	}
	if r.Applied() != 0 || r.Size() != 0 {
		t.Error("a refused snapshot changed the map")
	}
}
