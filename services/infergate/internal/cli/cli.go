// Package cli is the infergate command: the CLI for keys, deployments,
// auth toggles and admin tokens, the event stream's configuration, and the
// `dev` one-process stack.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/adminauth"
)

const usage = `infergate — API-key authentication for OpenAI-compatible inference

Usage:
  infergate dev [--demo] [flags]           run everything in one process
  infergate dev --regions eu,us [--region-max-staleness 30s]   the hub, and per region a leaf NATS server, mirror and gateway
  infergate keys create NAME [--description D] [--expires-in 720h | --expires-at RFC3339] [--deployments a,b]
  infergate keys list | get NAME | update NAME [--description D] [--expires-at T | --expires-in D | --never-expires] | delete NAME
  infergate keys rotate NAME [--grace 24h]   a new secret; the old one works for the grace (0: stops at once)
  infergate keys usage NAME [--since -24h] [--until T] [--deployment D] [--series [--step 1h]]   requests, errors and tokens
  infergate deployments create NAME --model M --upstream URL [--regions a,b] [--auth] [--keys a,b]
  infergate deployments list | get NAME | delete NAME
  infergate deployments usage NAME [--since -24h] [--until T] [--key K] [--series [--step 1h]]   requests by key, tokens
  infergate deployments auth NAME --enable|--disable [--keys a,b]
  infergate deployments link NAME KEY | unlink NAME KEY
  infergate audit events [--key K] [--deployment D] [--since T] [--until T] [--type T,…]
  infergate audit check --deployment D --key K [--secret-hint H] [--at T]   would that key (that secret) have been let in at T?
  infergate audit state [--at T]                          keys, deployments and links at T
      (times: RFC 3339, or relative like -2h)
  infergate admin-token new --name N --projects a,b
  infergate admin stream create --replicas N [--duplicate-window D] [--memory] [--stream events|usage]
  infergate admin stream update [--replicas N] [--duplicate-window D] [--stream events|usage]
  infergate admin stream info [--stream usage]  the event (or usage) stream, checked against its declaration
  infergate admin stream create-mirror --domain REGION [--hub-domain hub]   a region's mirror of the stream (docs/multi-region.md)
      (admin stream talks to NATS: --nats-url, env INFERGATE_NATS_URL; --nats-nkey, env INFERGATE_NATS_NKEY; --nats-ca, env INFERGATE_NATS_CA)
  infergate demo-upstream [--addr 127.0.0.1:8001]

Common flags (every command that calls the control plane):
  --project, -p  project (env INFERGATE_PROJECT, default "default")
  -o             output: table (default) or json
  --api-url      control plane URL (env INFERGATE_API_URL, else <data-dir>/api-url, else http://127.0.0.1:8080)
  --token        admin token (env INFERGATE_TOKEN, else <data-dir>/admin-token)
  --data-dir     data dir of a local "infergate dev" (env INFERGATE_DATA_DIR, default ./.infergate)

Run "infergate <command> -h" for a command's flags.
`

// errUsage means the command line was wrong; the usage was printed.
var errUsage = errors.New("usage")

// errSecretLost means a CreateKey was applied but the one answer that
// carried the secret did not arrive.
var errSecretLost = errors.New("secret lost")

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		return 2
	}
	if ce := new(connect.Error); errors.As(err, &ce) {
		fmt.Fprintf(stderr, "error: %s: %s\n", ce.Code(), ce.Message())
	} else {
		fmt.Fprintf(stderr, "error: %v\n", err)
	}
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, stdout, stderr)
	case "keys", "key":
		return runKeys(ctx, rest, stdout, stderr)
	case "deployments", "deployment":
		return runDeployments(ctx, rest, stdout, stderr)
	case "audit":
		return runAudit(ctx, rest, stdout, stderr)
	case "admin-token":
		return runAdminToken(rest, stdout, stderr)
	case "admin":
		return runAdmin(ctx, rest, stdout, stderr)
	case "demo-upstream":
		return runDemoUpstream(ctx, rest, stdout, stderr)
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
	return errUsage
}

// common are the flags of every command that calls the control plane.
type common struct {
	project, output, apiURL, token, dataDir string
}

func (c *common) register(fs *flag.FlagSet) {
	project := envOr("INFERGATE_PROJECT", "default")
	fs.StringVar(&c.project, "project", project, "project")
	fs.StringVar(&c.project, "p", project, "project (shorthand)")
	fs.StringVar(&c.output, "o", "table", "output: table or json")
	fs.StringVar(&c.apiURL, "api-url", os.Getenv("INFERGATE_API_URL"), "control plane URL")
	fs.StringVar(&c.token, "token", os.Getenv("INFERGATE_TOKEN"), "admin token")
	fs.StringVar(&c.dataDir, "data-dir", envOr("INFERGATE_DATA_DIR", ".infergate"), "data dir of a local infergate dev")
}

func (c *common) validate() error {
	if c.output != "table" && c.output != "json" {
		return fmt.Errorf("-o must be table or json, not %q", c.output)
	}
	return nil
}

// clientOptions finds the control plane and the token: flags, then the
// environment, then the data dir of a local `infergate dev`.
func (c *common) endpoint() (string, []connect.ClientOption, error) {
	url := c.apiURL
	if url == "" {
		if b, err := os.ReadFile(filepath.Join(c.dataDir, devstack.APIURLFile)); err == nil {
			url = strings.TrimSpace(string(b))
		} else {
			url = "http://127.0.0.1:8080"
		}
	}
	token := c.token
	if token == "" {
		b, err := os.ReadFile(filepath.Join(c.dataDir, devstack.TokenFile))
		if err != nil {
			return "", nil, fmt.Errorf("no admin token: pass --token, set INFERGATE_TOKEN, or run \"infergate dev\" with --data-dir %s", c.dataDir)
		}
		token = strings.TrimSpace(string(b))
	}
	return strings.TrimRight(url, "/"), []connect.ClientOption{connect.WithInterceptors(
		adminauth.NewClientInterceptor(token),
		newRequestIDInterceptor(retryAttempts, retryBackoff),
	)}, nil
}

func (c *common) keysClient() (keyv1connect.KeyServiceClient, error) {
	url, opts, err := c.endpoint()
	if err != nil {
		return nil, err
	}
	return keyv1connect.NewKeyServiceClient(http.DefaultClient, url, opts...), nil
}

func (c *common) deploymentsClient() (deploymentv1connect.DeploymentServiceClient, error) {
	url, opts, err := c.endpoint()
	if err != nil {
		return nil, err
	}
	return deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, url, opts...), nil
}

// printJSON writes a message as indented JSON.
func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// allPages calls page with each next-page token, from the first page
// until the server returns no token, and gathers the items.
func allPages[T any](page func(token string) (items []T, next string, err error)) ([]T, error) {
	var all []T
	for token := ""; ; {
		items, next, err := page(token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if token = next; token == "" {
			return all, nil
		}
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// parse parses flags that may come before, between or after positional
// arguments (`keys create ci --description x`), and checks the number of
// positional arguments.
func parse(fs *flag.FlagSet, args []string, positional ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != len(positional) {
		fmt.Fprintf(fs.Output(), "%s needs %d argument(s): %s\n", fs.Name(), len(positional), strings.Join(positional, " "))
		fs.Usage()
		return nil, errUsage
	}
	return pos, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg devstack.Config
	fs := flag.NewFlagSet("infergate dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DataDir, "data-dir", envOr("INFERGATE_DATA_DIR", ".infergate"), "where NATS keeps the stream and the admin token is saved")
	fs.StringVar(&cfg.APIAddr, "api-addr", "127.0.0.1:8080", "control-plane listen address")
	fs.StringVar(&cfg.GatewayAddr, "gateway-addr", "127.0.0.1:8000", "gateway listen address")
	fs.StringVar(&cfg.NATSAddr, "nats-addr", "127.0.0.1:0", "embedded NATS listen address (port 0: a free port)")
	fs.StringVar(&cfg.BaseDomain, "base-domain", "localhost", "gateway base domain: model-<deployment>.<project>.<base-domain>")
	fs.StringVar(&cfg.Region, "region", "local", "the gateway's region")
	fs.StringVar(&cfg.AdminTokensFile, "admin-tokens-file", "", "JSON file of admin tokens (else one generated token for every project)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", os.Getenv("INFERGATE_DATABASE_URL"), "PostgreSQL URL for the read models (else memory)")
	fs.BoolVar(&cfg.Demo, "demo", false, "create a demo key and deployment and print a curl command")
	fastPath := fs.Bool("http1-fastpath", envOr("INFERGATE_HTTP1_FASTPATH", "true") != "false", "serve common HTTP/1.1 gateway requests on the gateway's own fast path instead of net/http (env INFERGATE_HTTP1_FASTPATH)")
	regions := fs.String("regions", "", "regions to run on this machine, comma-separated (e.g. eu,us): the embedded NATS server becomes the hub, and each region gets a leaf NATS server with a mirror of the stream and its own gateway (docs/multi-region.md)")
	fs.DurationVar(&cfg.UsageFlushInterval, "usage-flush-interval", 0, "how often the gateways publish usage counts (default 10s; shorter shows keys usage moving sooner; docs/usage.md)")
	fs.DurationVar(&cfg.RegionMaxStaleness, "region-max-staleness", 0, "with --regions: the regions' gateways' staleness bound (default 5m); short bounds show a cut-off region refusing as stale sooner")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg.Regions = splitList(*regions)
	cfg.NoHTTP1FastPath = !*fastPath
	cfg.Out = stdout
	err := devstack.Run(ctx, cfg, nil)
	if ctx.Err() != nil {
		// SIGINT or SIGTERM: whatever was under way ended because of it.
		return nil
	}
	return err
}

func runAdminToken(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "new" {
		fmt.Fprintln(stderr, "usage: infergate admin-token new --name N --projects a,b")
		return errUsage
	}
	fs := flag.NewFlagSet("infergate admin-token new", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "the token's name: the actor of every event it causes")
	projects := fs.String("projects", "", `projects it may use, comma-separated, or "*" for all`)
	if _, err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *name == "" || *projects == "" {
		fmt.Fprintln(stderr, "--name and --projects are required")
		return errUsage
	}
	token, entry, err := adminauth.New(*name, splitList(*projects))
	if err != nil {
		return err
	}
	if _, err := adminauth.FromEntries([]adminauth.Entry{entry}); err != nil {
		return err
	}
	line, _ := jsonLine(entry)
	fmt.Fprintf(stdout, "Token (shown once; give it to %q and keep it secret):\n  %s\n\nAdd this line to the admin tokens file (--admin-tokens-file):\n  %s\n", *name, token, line)
	return nil
}
