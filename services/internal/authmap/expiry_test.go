package authmap_test

import (
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/authmap"
)

// TestExpiryChanged: KeyExpiryChanged moves a key's expiry for every
// decision after it, at the decision's own clock; removing it makes an
// expired key work again; a snapshot carries the changed expiry; a change
// naming another life of the key changes nothing.
func TestExpiryChanged(t *testing.T) {
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
	want := func(what string, got, want authmap.Reason) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	decide := func(secret string, at time.Time) authmap.Reason {
		return m.Decide(proj, dep, "", secret, at).Reason
	}

	want("alpha before", decide(secretA, t0), authmap.ReasonLinked)
	apply(keyExpiryChanged(proj, "alpha", "ka", t0.Add(time.Hour)))
	want("alpha before its new expiry", decide(secretA, t0.Add(time.Hour-time.Nanosecond)), authmap.ReasonLinked)
	want("alpha at its new expiry", decide(secretA, t0.Add(time.Hour)), authmap.ReasonExpired)
	want("alpha after its new expiry (CheckKey)", m.CheckKey(proj, dep, "alpha", t0.Add(2*time.Hour)), authmap.ReasonExpired)
	for _, k := range m.Snapshot().Keys {
		if k.Name == "alpha" && !k.ExpiresAt.Equal(t0.Add(time.Hour)) {
			t.Errorf("Snapshot: alpha expires at %v", k.ExpiresAt)
		}
	}

	// A rotated key: the expiry bounds the old secret's grace too.
	secretA2 := mustSecret()
	apply(keyRotated(proj, "alpha", "ka", secretA2, t0.Add(3*time.Hour)))
	want("old secret past the key's expiry", decide(secretA, t0.Add(time.Hour)), authmap.ReasonExpired)
	want("new secret past the key's expiry", decide(secretA2, t0.Add(time.Hour)), authmap.ReasonExpired)

	// Another life's id: nothing changes.
	apply(keyExpiryChanged(proj, "alpha", "other-life", time.Time{}))
	want("change for another life", decide(secretA2, t0.Add(time.Hour)), authmap.ReasonExpired)

	// Never expires: works again, the old secret until its own grace.
	apply(keyExpiryChanged(proj, "alpha", "ka", time.Time{}))
	want("new secret, never expiring", decide(secretA2, t0.Add(1000*time.Hour)), authmap.ReasonLinked)
	want("old secret in its grace", decide(secretA, t0.Add(2*time.Hour)), authmap.ReasonLinked)
	want("old secret after its grace", decide(secretA, t0.Add(3*time.Hour)), authmap.ReasonRotated)

	// Shortened again, then saved and restored: the restored map decides
	// with the changed expiry.
	apply(keyExpiryChanged(proj, "alpha", "ka", t0.Add(30*time.Minute)))
	restored := authmap.New()
	if err := restored.RestoreBytes(saved(t, m)); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{t0, t0.Add(30 * time.Minute)} {
		for _, s := range []string{secretA, secretA2} {
			if got, w := restored.Decide(proj, dep, "", s, at).Reason, decide(s, at); got != w {
				t.Errorf("restored map at %v: %v, want %v", at, got, w)
			}
		}
	}
	want("expired again", decide(secretA2, t0.Add(30*time.Minute)), authmap.ReasonExpired)
}
