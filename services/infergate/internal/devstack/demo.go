package devstack

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/httpserver"
)

// The demo's names.
const (
	DemoProject    = "default"
	DemoDeployment = "demo"
	DemoKey        = "demo-key"
)

// Demo is the demo deployment and a fresh key for it.
type Demo struct {
	EndpointURL string
	PathURL     string
	Secret      string
}

// demoUpstream is the demo model on a loopback port of its own. It
// answers only under a path prefix made of 256 random bits, new in every
// process, that nothing but the demo deployment's upstream_url carries: a
// request that did not come through the gateway (which adds the prefix
// when it proxies) is refused with 403. So the demo model, which has no
// keys of its own, is reachable only with a key the gateway admits.
//
// The prefix is a capability, not a key: whoever can read the demo
// deployment's upstream_url — an admin of its project, who can mint a key
// for it anyway, or a holder of NATS credentials that read the event
// stream — can call the demo model directly while this process runs.
type demoUpstream struct {
	ln     net.Listener
	prefix string // "/" + the secret
	model  http.Handler
}

func listenDemoUpstream() (*demoUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo model: %w", err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // crypto/rand.Read never fails
	prefix := "/" + base64.RawURLEncoding.EncodeToString(secret)
	return &demoUpstream{
		ln:     ln,
		prefix: prefix,
		model:  (&demomodel.Server{ChunkDelay: 20 * time.Millisecond}).Handler(prefix),
	}, nil
}

// url is the demo deployment's upstream_url.
func (d *demoUpstream) url() string { return "http://" + d.ln.Addr().String() + d.prefix }

func (d *demoUpstream) serve(ctx context.Context) error {
	return httpserver.Serve(ctx, httpserver.New(d.ln.Addr().String(), d), d.ln, time.Second)
}

func (d *demoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Constant time, so the answer's timing does not spell the prefix out.
	got := r.URL.Path[:min(len(r.URL.Path), len(d.prefix))]
	rest := r.URL.Path[len(got):]
	if subtle.ConstantTimeCompare([]byte(got), []byte(d.prefix)) != 1 || !strings.HasPrefix(rest, "/") {
		http.Error(w, "the infergate demo model answers only through the gateway, with an API key", http.StatusForbidden)
		return
	}
	d.model.ServeHTTP(w, r)
}

// ensureDemo makes sure the demo deployment exists with auth enabled in
// front of this process's demo model (upstream), and gives it a fresh demo
// key (a secret cannot be shown twice, so a restart replaces the key). A
// demo deployment left by an earlier process points at that process's
// demo model; upstream_url cannot change, so it is deleted and made again
// with the same linked keys. It goes through the public API like any
// client.
func ensureDemo(ctx context.Context, st *Stack, token, upstream string) (*Demo, error) {
	if token == "" {
		return nil, fmt.Errorf("--demo needs the generated admin token; it cannot be used with --admin-tokens-file")
	}
	opts := connect.WithInterceptors(adminauth.NewClientInterceptor(token))
	keysClient := keyv1connect.NewKeyServiceClient(http.DefaultClient, st.APIURL, opts)
	depsClient := deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, st.APIURL, opts)

	_, err := keysClient.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: DemoProject, Name: DemoKey}))
	if err != nil && connect.CodeOf(err) != connect.CodeNotFound {
		return nil, err
	}
	created, err := keysClient.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{
		Project: DemoProject, Name: DemoKey, Description: "made by infergate dev --demo; replaced at every start",
	}))
	if err != nil {
		return nil, err
	}
	got, err := depsClient.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: DemoProject, Name: DemoDeployment}))
	stale := err == nil && got.Msg.GetDeployment().GetUpstreamUrl() != upstream
	if stale {
		if _, err := depsClient.DeleteDeployment(ctx, connect.NewRequest(&deploymentv1.DeleteDeploymentRequest{Project: DemoProject, Name: DemoDeployment})); err != nil {
			return nil, err
		}
	}
	var seq uint64
	switch {
	case stale || connect.CodeOf(err) == connect.CodeNotFound:
		keys := []string{DemoKey}
		if stale {
			keys = append(keys, got.Msg.GetDeployment().GetApiKeys()...)
			slices.Sort(keys)
			keys = slices.Compact(keys)
		}
		res, err := depsClient.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
			Project: DemoProject, Name: DemoDeployment, Model: demomodel.ModelID,
			UpstreamUrl: upstream, AuthEnabled: true, ApiKeys: keys,
		}))
		if err != nil {
			return nil, err
		}
		seq = res.Msg.GetPropagation().GetSequence()
	case err != nil:
		return nil, err
	default:
		keys := append(got.Msg.GetDeployment().GetApiKeys(), DemoKey)
		res, err := depsClient.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
			Project: DemoProject, Name: DemoDeployment, AuthEnabled: true, ApiKeys: keys,
		}))
		if err != nil {
			return nil, err
		}
		seq = res.Msg.GetPropagation().GetSequence()
	}
	// Wait until the deployment answers and this gateway knows it all.
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := depsClient.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: DemoProject, Name: DemoDeployment}))
		if err != nil {
			return nil, err
		}
		status := d.Msg.GetDeployment().GetStatus()
		if status == deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED {
			return nil, fmt.Errorf("demo deployment failed: %s", d.Msg.GetDeployment().GetStatusReason())
		}
		if status == deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED && st.Gateway.Applied() >= seq {
			return &Demo{
				EndpointURL: d.Msg.GetDeployment().GetEndpointUrl(),
				PathURL:     "http://127.0.0.1:" + st.gatewayPort + "/d/" + DemoProject + "/" + DemoDeployment,
				Secret:      created.Msg.GetSecret(),
			}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("demo deployment still %s after 30s", status)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func printBanner(cfg Config, st *Stack) {
	w := cfg.Out
	fmt.Fprintf(w, "infergate dev — everything in one process (data in %s)\n\n", cfg.DataDir)
	fmt.Fprintf(w, "  control plane  %s   (Connect, gRPC, gRPC-Web, REST: %s/openapi.json)\n", st.APIURL, st.APIURL)
	fmt.Fprintf(w, "  gateway        %s   (region %s; http://model-<deployment>.<project>.%s:%s or /d/<project>/<deployment>/…)\n",
		st.GatewayURL, cfg.Region, cfg.BaseDomain, st.gatewayPort)
	fmt.Fprintf(w, "  console        %s   (sign in with the admin token)\n", st.ConsoleURL)
	fmt.Fprintf(w, "  NATS           %s\n", st.NATSURL)
	if cfg.DatabaseURL != "" {
		fmt.Fprintf(w, "  read models    PostgreSQL\n")
	} else {
		fmt.Fprintf(w, "  read models    memory (rebuilt from the stream at start)\n")
	}
	if st.Token != "" {
		fmt.Fprintf(w, "  admin token    %s\n                 (saved in %s/%s for the infergate CLI)\n", st.Token, cfg.DataDir, TokenFile)
	}
	if d := st.Demo; d != nil {
		fmt.Fprintf(w, "\nDemo: deployment %q in project %q (the built-in demo model — not a real model), key %q:\n\n",
			DemoDeployment, DemoProject, DemoKey)
		fmt.Fprintf(w, "  curl %s/v1/chat/completions \\\n    -H \"X-API-Key: %s\" \\\n    -H \"Content-Type: application/json\" \\\n    -d '{\"model\": %q, \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}]}'\n\n",
			d.EndpointURL, d.Secret, demomodel.ModelID)
		fmt.Fprintf(w, "  Without *.localhost name resolution (most SDKs): %s/v1/chat/completions\n", d.PathURL)
		fmt.Fprintf(w, "  The key's secret is shown only now; a restart with --demo replaces the key.\n")
	}
	if len(st.Regions) > 0 {
		fmt.Fprintf(w, "\nRegions (the embedded NATS server above is the hub, JetStream domain %q):\n", eventstore.DefaultHubDomain)
		for _, r := range st.Regions {
			fmt.Fprintf(w, "  %-13s  gateway %s   leaf NATS %s (domain %q, mirror of the stream)\n", r.Name, r.GatewayURL, r.NATSURL, r.Name)
		}
		fmt.Fprintf(w, "  links          %s/regions   (GET: each region's link and gateway status)\n", st.RegionsURL)
		fmt.Fprintf(w, "  cut a region   curl -X POST %s/regions/%s/cut    (heal: .../heal)\n", st.RegionsURL, st.Regions[0].Name)
		fmt.Fprintf(w, "  restart a region's gateway   curl -X POST %s/regions/%s/restart   (from the region's snapshot and mirror)\n", st.RegionsURL, st.Regions[0].Name)
	}
	fmt.Fprintf(w, "\nCtrl-C stops it; the data stays in %s.\n", cfg.DataDir)
}
