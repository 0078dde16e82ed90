package authmap_test

import (
	"bytes"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/authmap"
)

// TestDecisionNames: a decision carries the deployment's and, where the
// deployment checks keys and the key is of its project, the key's
// numbers, which Names turns back into names — in a restored snapshot
// and a clone too.
func TestDecisionNames(t *testing.T) {
	t.Parallel()
	ci, _ := apikey.Generate()
	other, _ := apikey.Generate()
	m := authmap.New()
	m.Apply(1, []*eventv1.Event{
		keyCreated("p", "ci-runner", "k1", ci, time.Time{}),
		keyCreated("q", "elsewhere", "k2", other, time.Time{}),
		depCreated("p", "llama", "d1", "http://up"), deployed("p", "llama", "d1"), authEnabled("p", "llama", "d1"),
		linked("p", "llama", "d1", "ci-runner", "k1"),
		depCreated("p", "open", "d2", "http://up"), deployed("p", "open", "d2"),
	})
	now := time.Now()
	var snap bytes.Buffer
	if _, err := m.Save(&snap); err != nil {
		t.Fatal(err)
	}
	restored := authmap.New()
	if err := restored.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]*authmap.Map{"applied": m, "restored": restored, "clone": m.Clone()} {
		cases := []struct {
			dep, key, wantKey string
			result            authmap.Result
		}{
			{"llama", ci, "ci-runner", authmap.ResultAllowed},
			{"llama", "", "", authmap.ResultMissingAPIKey},
			{"llama", other, "", authmap.ResultInvalidAPIKey}, // another project's key is nobody here
			{"open", ci, "", authmap.ResultAuthDisabled},      // not checked: not counted under the key
		}
		for _, c := range cases {
			d := m.Decide("p", c.dep, "", c.key, now)
			if d.Result != c.result || d.Deployment == 0 {
				t.Errorf("%s: %s: %+v", name, c.dep, d)
				continue
			}
			project, dep, key, ok := m.Names(d.Deployment, d.Key)
			if !ok || project != "p" || dep != c.dep || key != c.wantKey {
				t.Errorf("%s: %s with %q: names %q %q %q %v", name, c.dep, c.wantKey, project, dep, key, ok)
			}
		}
		if d := m.Decide("p", "nothing", "", ci, now); d.Deployment != 0 || d.Key != 0 {
			t.Errorf("%s: unknown deployment: %+v", name, d)
		}
		if _, _, _, ok := m.Names(99, 0); ok {
			t.Errorf("%s: Names of a number the map never gave", name)
		}
	}
}
