package bounds_test

import (
	"errors"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/bounds"
)

func TestDefaultsAndBodyDeadline(t *testing.T) {
	t.Parallel()
	var b bounds.Bounds
	b.SetDefaults()
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	if b.Head != 10*time.Second || b.ResponseHead != 10*time.Minute {
		t.Errorf("defaults: %+v", b)
	}
	start := time.Unix(1000, 0)
	if got := b.BodyDeadline(start, 0); !got.Equal(start.Add(b.Body)) {
		t.Errorf("empty body: %v", got)
	}
	if got := b.BodyDeadline(start, 10*b.BodyMinRate); !got.Equal(start.Add(b.Body + 10*time.Second)) {
		t.Errorf("ten seconds' worth: %v", got)
	}
	bad := bounds.Bounds{Head: -1, BodyMinRate: -1}
	if err := bad.Validate(); !errors.Is(err, bounds.ErrInvalid) {
		t.Errorf("Validate: %v", err)
	}
}
