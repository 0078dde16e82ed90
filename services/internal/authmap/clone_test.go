package authmap_test

import (
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/authmap"
)

func TestCloneIsIndependent(t *testing.T) {
	t.Parallel()
	orig := authmap.New()
	var seq uint64
	for _, rec := range base() {
		seq++
		orig.Apply(seq, rec)
	}
	clone := orig.Clone()
	if clone.Applied() != orig.Applied() {
		t.Fatalf("clone applied %d, original %d", clone.Applied(), orig.Applied())
	}
	at := t0.Add(time.Minute)
	for _, m := range []*authmap.Map{orig, clone} {
		if r := m.CheckKey(proj, dep, "alpha", at); r != authmap.ReasonLinked {
			t.Fatalf("before: alpha is %s", r)
		}
		if d := m.Decide(proj, dep, "", secretA, at); !d.Result.Allowed() {
			t.Fatalf("before: alpha's secret decided %s", d.Result)
		}
	}
	// Change the clone only: unlink alpha, link bravo, then delete alpha.
	clone.Apply(seq+1, []*eventv1.Event{unlinked(proj, dep, depID, "alpha", "ka"), linked(proj, dep, depID, "bravo", "kb")})
	clone.Apply(seq+2, []*eventv1.Event{keyDeleted(proj, "alpha", "ka")})

	if r := clone.CheckKey(proj, dep, "alpha", at); r != authmap.ReasonDeleted {
		t.Errorf("clone: alpha is %s, want deleted", r)
	}
	if r := clone.CheckKey(proj, dep, "bravo", at); r != authmap.ReasonLinked {
		t.Errorf("clone: bravo is %s, want linked", r)
	}
	if r := orig.CheckKey(proj, dep, "alpha", at); r != authmap.ReasonLinked {
		t.Errorf("original changed with the clone: alpha is %s", r)
	}
	if r := orig.CheckKey(proj, dep, "bravo", at); r != authmap.ReasonNotLinked {
		t.Errorf("original changed with the clone: bravo is %s", r)
	}
	if orig.Applied() != seq || clone.Applied() != seq+2 {
		t.Errorf("applied: original %d, clone %d", orig.Applied(), clone.Applied())
	}
	// And the clone decides like a map that replayed the same records.
	replayed := authmap.New()
	for i, rec := range base() {
		replayed.Apply(uint64(i+1), rec)
	}
	replayed.Apply(seq+1, []*eventv1.Event{unlinked(proj, dep, depID, "alpha", "ka"), linked(proj, dep, depID, "bravo", "kb")})
	replayed.Apply(seq+2, []*eventv1.Event{keyDeleted(proj, "alpha", "ka")})
	for _, secret := range []string{secretA, secretB, "nope"} {
		if a, b := clone.Decide(proj, dep, "", secret, at), replayed.Decide(proj, dep, "", secret, at); a.Result != b.Result || a.Reason != b.Reason {
			t.Errorf("clone decided %v, replay %v", a, b)
		}
	}
}
