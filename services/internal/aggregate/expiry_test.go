package aggregate_test

import (
	"errors"
	"testing"
	"time"

	"github.com/infergate/infergate/services/internal/aggregate"
)

func ptr[T any](v T) *T { return &v }

func TestKeyUpdateExpiry(t *testing.T) {
	t.Parallel()
	m := meta()
	var k aggregate.Key
	created, err := k.Create(m, aggregate.NewKey{Name: "ci-one", Description: "CI", Hint: "ig_…abcd"})
	if err != nil {
		t.Fatal(err)
	}
	k.Apply(created[0])

	// Nothing asked, nothing changes; never-expires on a never-expiring key
	// is a no-op too.
	for _, c := range []aggregate.KeyChange{{}, {Expiry: aggregate.NeverExpires()}, {Description: ptr("CI")}} {
		if ev, err := k.Update(m, c); err != nil || len(ev) != 0 {
			t.Errorf("Update(%+v) = %v, %v; want nothing", c, types(ev), err)
		}
	}

	// An expiry in the past, or now, is refused like at creation, and the
	// description of the same command does not change either.
	for _, at := range []time.Time{now.Add(-time.Hour), now} {
		_, err := k.Update(m, aggregate.KeyChange{Description: ptr("other"), Expiry: aggregate.ExpiresAt(at)})
		var fe *aggregate.FieldError
		if !errors.As(err, &fe) || fe.Field != "expires_at" {
			t.Errorf("Update(expires_at %v) = %v; want an InvalidArgument on expires_at", at, err)
		}
	}

	// Both fields: one event each.
	soon := now.Add(time.Hour)
	ev, err := k.Update(m, aggregate.KeyChange{Description: ptr("nightly"), Expiry: aggregate.ExpiresAt(soon)})
	if err != nil || types(ev) != "KeyUpdated KeyExpiryChanged" {
		t.Fatalf("Update(both) = %v, %v", types(ev), err)
	}
	if x := ev[1].GetKeyExpiryChanged(); x.GetKeyId() != k.ID || !x.GetExpiresAt().AsTime().Equal(soon) {
		t.Errorf("KeyExpiryChanged = %v", x)
	}
	for _, e := range ev {
		k.Apply(e)
	}
	if k.Description != "nightly" || k.ExpiresAt == nil || !k.ExpiresAt.Equal(soon) {
		t.Fatalf("after update: %+v", k)
	}
	if ev, err := k.Update(m, aggregate.KeyChange{Expiry: aggregate.ExpiresAt(soon)}); err != nil || len(ev) != 0 {
		t.Errorf("same expiry again = %v, %v; want nothing", types(ev), err)
	}

	// Once expired, it can be given a new life: a later expiry or none.
	later := m
	later.Now = soon.Add(time.Minute)
	if _, err := k.Rotate(later, 0, aggregate.NewSecret{Hint: "x"}); !errors.Is(err, aggregate.ErrFailedPrecondition) {
		t.Fatalf("rotate while expired = %v", err)
	}
	ev, err = k.Update(later, aggregate.KeyChange{Expiry: aggregate.NeverExpires()})
	if err != nil || types(ev) != "KeyExpiryChanged" || ev[0].GetKeyExpiryChanged().GetExpiresAt() != nil {
		t.Fatalf("never expires = %v, %v", ev, err)
	}
	k.Apply(ev[0])
	if k.ExpiresAt != nil {
		t.Errorf("ExpiresAt = %v, want nil", k.ExpiresAt)
	}
	if _, err := k.Rotate(later, 0, aggregate.NewSecret{Hint: "x"}); err != nil {
		t.Errorf("rotate after never-expires = %v", err)
	}

	// A deleted key cannot be updated.
	del, _ := k.Delete(m)
	k.Apply(del[0])
	if _, err := k.Update(m, aggregate.KeyChange{Expiry: aggregate.ExpiresAt(soon)}); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("update deleted = %v", err)
	}
}
