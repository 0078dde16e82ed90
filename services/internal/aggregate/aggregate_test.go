package aggregate_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/aggregate"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func meta() aggregate.Meta {
	n := 0
	return aggregate.Meta{Actor: "ops", Project: "team-a", Now: now, NewID: func() string {
		n++
		return fmt.Sprintf("id-%d", n)
	}}
}

// types names the payload of each event, e.g. "KeyLinked(ci-one)".
func types(events []*eventv1.Event) string {
	var out []string
	for _, e := range events {
		switch p := e.GetPayload().(type) {
		case *eventv1.Event_KeyLinked:
			out = append(out, "KeyLinked("+p.KeyLinked.GetKeyName()+")")
		case *eventv1.Event_KeyUnlinked:
			out = append(out, "KeyUnlinked("+p.KeyUnlinked.GetKeyName()+")")
		default:
			name := fmt.Sprintf("%T", p)
			out = append(out, strings.TrimPrefix(name, "*eventv1.Event_"))
		}
	}
	return strings.Join(out, " ")
}

func applyAll(d *aggregate.Deployment, events []*eventv1.Event) {
	for _, e := range events {
		d.Apply(e)
	}
}

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	m := meta()
	var k aggregate.Key
	nk := aggregate.NewKey{Name: "ci-one", Description: "CI", Hint: "ig_…abcd"}
	nk.Hash[0] = 7

	created, err := k.Create(m, nk)
	if err != nil {
		t.Fatal(err)
	}
	c := created[0].GetKeyCreated()
	if c == nil || c.GetSecretSha256()[0] != 7 || c.GetHint() != "ig_…abcd" || created[0].GetActor() != "ops" {
		t.Fatalf("KeyCreated = %v", created[0])
	}
	k.Apply(created[0])
	if !k.Live || k.ID == "" {
		t.Fatalf("after KeyCreated: %+v", k)
	}
	firstID := k.ID

	if _, err := k.Create(m, nk); !errors.Is(err, aggregate.ErrAlreadyExists) {
		t.Errorf("second create: %v, want ErrAlreadyExists", err)
	}
	if ev, err := k.Update(m, "CI"); err != nil || len(ev) != 0 {
		t.Errorf("update to the same description = %v, %v; want nothing", types(ev), err)
	}
	ev, err := k.Update(m, "new")
	if err != nil || types(ev) != "KeyUpdated" {
		t.Fatalf("update = %v, %v", types(ev), err)
	}
	k.Apply(ev[0])
	if k.Description != "new" {
		t.Errorf("description = %q", k.Description)
	}
	del, err := k.Delete(m)
	if err != nil {
		t.Fatal(err)
	}
	k.Apply(del[0])
	if k.Live {
		t.Error("key live after KeyDeleted")
	}
	if _, err := k.Delete(m); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("delete of a deleted key: %v", err)
	}
	if _, err := k.Update(m, "x"); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("update of a deleted key: %v", err)
	}
	again, err := k.Create(m, nk)
	if err != nil {
		t.Fatalf("re-create after delete: %v", err)
	}
	k.Apply(again[0])
	if !k.Live || k.ID == firstID {
		t.Errorf("re-created key = %+v; want live with a new id", k)
	}
}

func TestKeyValidation(t *testing.T) {
	t.Parallel()
	past := now.Add(-time.Minute)
	future := now.Add(time.Hour)
	tests := []struct {
		name, project string
		key           aggregate.NewKey
		field         string
	}{
		{"ok", "team-a", aggregate.NewKey{Name: "abcd", ExpiresAt: &future}, ""},
		{"short name", "team-a", aggregate.NewKey{Name: "abc"}, "name"},
		{"long name", "team-a", aggregate.NewKey{Name: strings.Repeat("a", 64)}, "name"},
		{"63 chars", "team-a", aggregate.NewKey{Name: strings.Repeat("a", 63)}, ""},
		{"upper case", "team-a", aggregate.NewKey{Name: "Abcd"}, "name"},
		{"leading dash", "team-a", aggregate.NewKey{Name: "-abcd"}, "name"},
		{"trailing dash", "team-a", aggregate.NewKey{Name: "abcd-"}, "name"},
		{"dot", "team-a", aggregate.NewKey{Name: "ab.cd"}, "name"},
		{"empty project", "", aggregate.NewKey{Name: "abcd"}, "project"},
		{"bad project", "Team_A", aggregate.NewKey{Name: "abcd"}, "project"},
		{"long project", strings.Repeat("p", 64), aggregate.NewKey{Name: "abcd"}, "project"},
		{"300 chars", "team-a", aggregate.NewKey{Name: "abcd", Description: strings.Repeat("é", 300)}, ""},
		{"301 chars", "team-a", aggregate.NewKey{Name: "abcd", Description: strings.Repeat("é", 301)}, "description"},
		{"expired", "team-a", aggregate.NewKey{Name: "abcd", ExpiresAt: &past}, "expires_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := aggregate.ValidateNewKey(tt.project, tt.key, now)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			var fe *aggregate.FieldError
			if !errors.Is(err, aggregate.ErrInvalid) || !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("error = %v, want an invalid %s", err, tt.field)
			}
		})
	}
}

func TestUpstreamURLValidation(t *testing.T) {
	t.Parallel()
	for url, ok := range map[string]bool{
		"http://10.0.0.1:8000":        true,
		"https://vllm.internal/":      true,
		"ftp://x":                     false,
		"/v1":                         false,
		"localhost:8000":              false,
		"http://user:pw@host":         false,
		"":                            false,
		"http://host/?q=1":            false,
		"https://models.example.com/": true,
	} {
		err := aggregate.ValidateUpstreamURL("upstream_url", url)
		if (err == nil) != ok {
			t.Errorf("ValidateUpstreamURL(%q) = %v", url, err)
		}
	}
}

func TestDeploymentCreate(t *testing.T) {
	t.Parallel()
	m := meta()
	live := aggregate.LiveKeys{"key-b": "kb", "key-a": "ka"}
	nd := aggregate.NewDeployment{Name: "llama", Model: "llama-3", UpstreamURL: "http://up:8000", Regions: []string{"us", "eu", "us"},
		AuthEnabled: true, Keys: []string{"key-b", "key-a"}}

	var d aggregate.Deployment
	ev, err := d.Create(m, nd, live)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := types(ev), "DeploymentCreated KeyLinked(key-a) KeyLinked(key-b) DeploymentAuthEnabled"; got != want {
		t.Fatalf("events = %s, want %s", got, want)
	}
	if r := ev[0].GetDeploymentCreated().GetRegions(); fmt.Sprint(r) != "[eu us]" {
		t.Errorf("regions = %v, want sorted and unique", r)
	}
	applyAll(&d, ev)
	if !d.Live || !d.AuthEnabled || len(d.Links) != 2 || d.Status != eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING {
		t.Fatalf("state = %+v", d)
	}
	if _, err := d.Create(m, nd, live); !errors.Is(err, aggregate.ErrAlreadyExists) {
		t.Errorf("duplicate create: %v", err)
	}
	var fresh aggregate.Deployment
	nd.Name = "other"
	if _, err := fresh.Create(m, nd, aggregate.LiveKeys{"key-a": "ka"}); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("create with an unknown key: %v, want ErrNotFound", err)
	}
}

func TestDeploymentUpdateAuth(t *testing.T) {
	t.Parallel()
	m := meta()
	live := aggregate.LiveKeys{"key-a": "ka", "key-b": "kb", "key-c": "kc"}
	var d aggregate.Deployment
	ev, _ := d.Create(m, aggregate.NewDeployment{Name: "llama", Model: "x", UpstreamURL: "http://up", Keys: []string{"key-a", "key-b"}}, live)
	applyAll(&d, ev)

	steps := []struct {
		name    string
		enabled bool
		keys    []string
		live    aggregate.LiveKeys
		want    string
	}{
		{"enable, swap b for c", true, []string{"key-a", "key-c"}, live, "KeyLinked(key-c) KeyUnlinked(key-b) DeploymentAuthEnabled"},
		{"same state again", true, []string{"key-c", "key-a"}, live, ""},
		{"duplicates in the request", true, []string{"key-c", "key-a", "key-a"}, live, ""},
		{"disable only", false, []string{"key-a", "key-c"}, live, "DeploymentAuthDisabled"},
		{"key-a deleted: its stale link is not counted", false, []string{"key-c"}, aggregate.LiveKeys{"key-c": "kc"}, ""},
		{"key-a re-created: linking it links the new key", false, []string{"key-a", "key-c"}, aggregate.LiveKeys{"key-a": "ka2", "key-c": "kc"}, "KeyLinked(key-a)"},
		{"unlink all", false, nil, aggregate.LiveKeys{"key-a": "ka2", "key-c": "kc"}, "KeyUnlinked(key-a) KeyUnlinked(key-c)"},
	}
	for _, st := range steps {
		ev, err := d.UpdateAuth(m, st.enabled, st.keys, st.live)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := types(ev); got != st.want {
			t.Fatalf("%s: events = %q, want %q", st.name, got, st.want)
		}
		applyAll(&d, ev)
	}
	if _, err := d.UpdateAuth(m, true, []string{"nope"}, live); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := d.UpdateAuth(m, true, []string{"BAD"}, live); !errors.Is(err, aggregate.ErrInvalid) {
		t.Errorf("bad key name: %v", err)
	}
}

// TestDeploymentSetAuth: the toggle alone (the platform's auth_enabled)
// keeps the links; the toggle it has decides nothing; a deployment that is
// gone is not found.
func TestDeploymentSetAuth(t *testing.T) {
	t.Parallel()
	m := meta()
	live := aggregate.LiveKeys{"key-a": "ka"}
	var d aggregate.Deployment
	if _, err := d.SetAuth(m, true); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("SetAuth before create: %v, want ErrNotFound", err)
	}
	ev, _ := d.Create(m, aggregate.NewDeployment{Name: "llama", Model: "x", UpstreamURL: "http://up", AuthEnabled: true, Keys: []string{"key-a"}}, live)
	applyAll(&d, ev)
	for _, st := range []struct {
		enabled bool
		want    string
	}{{true, ""}, {false, "DeploymentAuthDisabled"}, {false, ""}, {true, "DeploymentAuthEnabled"}} {
		ev, err := d.SetAuth(m, st.enabled)
		if err != nil || types(ev) != st.want {
			t.Fatalf("SetAuth(%v) = %q, %v; want %q", st.enabled, types(ev), err, st.want)
		}
		applyAll(&d, ev)
	}
	if got := d.EffectiveLinks(live); got["key-a"] != "ka" {
		t.Errorf("links after toggling: %v, want key-a kept", got)
	}
}

func TestDeploymentLinkUnlinkDelete(t *testing.T) {
	t.Parallel()
	m := meta()
	live := aggregate.LiveKeys{"key-a": "ka"}
	var d aggregate.Deployment
	ev, _ := d.Create(m, aggregate.NewDeployment{Name: "llama", Model: "x", UpstreamURL: "http://up"}, live)
	applyAll(&d, ev)

	ev, err := d.Link(m, "key-a", live)
	if err != nil || types(ev) != "KeyLinked(key-a)" {
		t.Fatalf("link = %s, %v", types(ev), err)
	}
	applyAll(&d, ev)
	if ev, err := d.Link(m, "key-a", live); err != nil || len(ev) != 0 {
		t.Errorf("link again = %s, %v; want a no-op", types(ev), err)
	}
	if _, err := d.Link(m, "key-z", live); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("link unknown: %v", err)
	}
	ev, err = d.Unlink(m, "key-a", live)
	if err != nil || types(ev) != "KeyUnlinked(key-a)" {
		t.Fatalf("unlink = %s, %v", types(ev), err)
	}
	applyAll(&d, ev)
	if ev, err := d.Unlink(m, "key-a", live); err != nil || len(ev) != 0 {
		t.Errorf("unlink again = %s, %v; want a no-op", types(ev), err)
	}

	ev, err = d.SetStatus(m, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED, "")
	if err != nil || types(ev) != "DeploymentStatusChanged" {
		t.Fatalf("set status = %s, %v", types(ev), err)
	}
	applyAll(&d, ev)
	if ev, _ := d.SetStatus(m, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED, ""); len(ev) != 0 {
		t.Error("same status twice decided events")
	}
	ev, err = d.Delete(m)
	if err != nil {
		t.Fatal(err)
	}
	applyAll(&d, ev)
	if d.Live {
		t.Error("live after delete")
	}
	for name, f := range map[string]func() error{
		"link":   func() error { _, err := d.Link(m, "key-a", live); return err },
		"unlink": func() error { _, err := d.Unlink(m, "key-a", live); return err },
		"update": func() error { _, err := d.UpdateAuth(m, true, nil, live); return err },
		"delete": func() error { _, err := d.Delete(m); return err },
	} {
		if err := f(); !errors.Is(err, aggregate.ErrNotFound) {
			t.Errorf("%s on a deleted deployment: %v", name, err)
		}
	}
}
