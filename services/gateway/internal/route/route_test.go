package route_test

import (
	"net/http/httptest"
	"testing"

	"github.com/infergate/infergate/services/gateway/internal/route"
)

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		host, target string
		kind         route.Kind
		want         route.Target
	}{
		{"model-chat.team-a.localhost:8000", "/v1/chat/completions", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/chat/completions"}},
		{"MODEL-Chat.Team-A.LocalHost.", "/v1/models", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/models"}},
		{"model-chat.team-a.localhost", "/d/x/y/healthz", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/d/x/y/healthz"}},
		{"model-chat.team-a.example.com", "/", route.Unroutable, route.Target{}},
		{"model-chat.localhost", "/", route.Unroutable, route.Target{}},
		{"model-a.b.c.localhost", "/", route.Unroutable, route.Target{}},
		{"localhost:8000", "/d/team-a/chat/v1/chat/completions?x=1", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/chat/completions"}},
		{"gw", "/d/Team-A/Chat", route.Deployment, route.Target{Project: "team-a", Deployment: "chat", Path: "/"}},
		{"gw", "/d/team-a/chat/", route.Deployment, route.Target{Project: "team-a", Deployment: "chat", Path: "/"}},
		{"gw", "/d/team-a/chat/v1/a%2Fb", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/a/b", RawPath: "/v1/a%2Fb"}},
		{"gw", "/d/team-a", route.Unroutable, route.Target{}},
		{"gw", "/d/", route.Unroutable, route.Target{}},
		{"gw", "/d", route.Unroutable, route.Target{}},
		{"gw", "/d/team_a/chat/x", route.Unroutable, route.Target{}},
		{"gw", "/healthz", route.Gateway, route.Target{}},
		{"model-chat.team-a.localhost", "/v1/../admin", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/../admin"}},
		{"model-chat.team-a.localhost", "/..", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/.."}},
		{"gw", "/d/team-a/chat/./v1/models", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/./v1/models"}},
		{"gw", "/d/team-a/chat/%2e%2e/admin", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/../admin", RawPath: "/%2e%2e/admin"}},
		{"gw", "/d/team-a/chat/v1/..models/x.", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/..models/x."}},
		{"model-chat.team-a.localhost", "/v1/..;/admin", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/..;/admin"}},
		{"model-chat.team-a.localhost", "/v1/.;x=1/models", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/.;x=1/models"}},
		{"model-chat.team-a.localhost", "/..;", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/..;"}},
		{"gw", "/d/team-a/chat/%2e%2e;/admin", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/..;/admin", RawPath: "/%2e%2e;/admin"}},
		{"gw", "/d/team-a/chat/%2E.%3B/admin", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/..;/admin", RawPath: "/%2E.%3B/admin"}},
		{"gw", "/d/team-a/chat/v1/models;v=1/x..;", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/models;v=1/x..;"}},
		{"gw", "/d/team-a/chat/v1/..%5cadmin", route.BadPath,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/..\\admin", RawPath: "/v1/..%5cadmin"}},
		{"gw", "/d/team-a/chat/v1/a\\b..\\c.", route.Deployment,
			route.Target{Project: "team-a", Deployment: "chat", Path: "/v1/a\\b..\\c.", RawPath: "/v1/a\\b..\\c."}},
		{"gw", "/../d/x", route.Gateway, route.Target{}},
		{"gw", "/dx/team-a/chat", route.Gateway, route.Target{}},
		{"[::1]:8000", "/metrics", route.Gateway, route.Target{}},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		r.Host = tc.host
		got, kind := route.Parse(r, "localhost")
		if kind != tc.kind || got != tc.want {
			t.Errorf("%s %s: %+v %v, want %+v %v", tc.host, tc.target, got, kind, tc.want, tc.kind)
		}
	}
}
