package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
)

// parseTime reads RFC 3339 ("2026-11-27T14:00:00Z") or a time relative to
// now ("-2h", "-30m", "now"); empty gives nil.
func parseTime(flagName, s string, now time.Time) (*timestamppb.Timestamp, error) {
	switch s {
	case "":
		return nil, nil
	case "now":
		return timestamppb.New(now), nil
	}
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: %w", flagName, s, err)
		}
		return timestamppb.New(now.Add(d)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fmt.Errorf("--%s %q: use RFC 3339 (2026-11-27T14:00:00Z) or a relative time like -2h", flagName, s)
	}
	return timestamppb.New(t), nil
}

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: infergate audit events|check|state …")
		return errUsage
	}
	sub, args := args[0], args[1:]
	var c common
	fs := flag.NewFlagSet("infergate audit "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	var key, deployment, since, until, at, types, secretHint string
	switch sub {
	case "events":
		fs.StringVar(&key, "key", "", "only events about this key (its own and its links)")
		fs.StringVar(&deployment, "deployment", "", "only events of this deployment")
		fs.StringVar(&since, "since", "", "from this time (RFC 3339 or relative, e.g. -2h)")
		fs.StringVar(&until, "until", "", "before this time (RFC 3339 or relative)")
		fs.StringVar(&types, "type", "", "only these event types, comma-separated (e.g. KeyLinked,KeyUnlinked)")
	case "check":
		fs.StringVar(&key, "key", "", "the key's name (required)")
		fs.StringVar(&secretHint, "secret-hint", "", "which of the key's secrets, by hint (current or rotated out; default: the current one)")
		fs.StringVar(&deployment, "deployment", "", "the deployment's name (required)")
		fs.StringVar(&at, "at", "now", "the moment (RFC 3339 or relative, e.g. -2h)")
	case "state":
		fs.StringVar(&at, "at", "now", "the moment (RFC 3339 or relative, e.g. -2h)")
	default:
		fmt.Fprintf(stderr, "unknown audit command %q\n", sub)
		return errUsage
	}
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	url, opts, err := c.endpoint()
	if err != nil {
		return err
	}
	client := auditv1connect.NewAuditServiceClient(http.DefaultClient, url, opts...)
	now := time.Now()
	switch sub {
	case "events":
		sinceTS, err := parseTime("since", since, now)
		if err != nil {
			return err
		}
		untilTS, err := parseTime("until", until, now)
		if err != nil {
			return err
		}
		req := &auditv1.ListEventsRequest{Project: c.project, Key: key, Deployment: deployment, Since: sinceTS, Until: untilTS, Types: splitList(types), PageSize: 1000}
		events, err := allPages(func(token string) ([]*auditv1.Event, string, error) {
			req.PageToken = token
			res, err := client.ListEvents(ctx, connect.NewRequest(req))
			if err != nil {
				return nil, "", err
			}
			return res.Msg.GetEvents(), res.Msg.GetNextPageToken(), nil
		})
		if err != nil {
			return err
		}
		all := &auditv1.ListEventsResponse{Events: events}
		if c.output == "json" {
			return printJSON(stdout, all)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tEVENT\tDETAILS")
		for _, e := range all.GetEvents() {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", e.GetSequence(), e.GetTime().AsTime().UTC().Format(time.RFC3339Nano), e.GetActor(), e.GetType(), e.GetSummary())
		}
		return tw.Flush()
	case "check":
		if key == "" || deployment == "" {
			fmt.Fprintln(stderr, "audit check needs --key and --deployment")
			return errUsage
		}
		atTS, err := parseTime("at", at, now)
		if err != nil {
			return err
		}
		res, err := client.CheckAccess(ctx, connect.NewRequest(&auditv1.CheckAccessRequest{Project: c.project, Deployment: deployment, Key: key, At: atTS, SecretHint: secretHint}))
		if err != nil {
			return err
		}
		if c.output == "json" {
			return printJSON(stdout, res.Msg)
		}
		verdict := "REFUSED"
		if res.Msg.GetAllowed() {
			verdict = "ALLOWED"
		}
		which := key
		if secretHint != "" {
			which += " (secret " + secretHint + ")"
		}
		fmt.Fprintf(stdout, "%s: key %s on deployment %s at %s — reason %s (stream up to sequence %d)\n",
			verdict, which, deployment, atTS.AsTime().UTC().Format(time.RFC3339), res.Msg.GetReason(), res.Msg.GetSequence())
		return nil
	default: // state
		atTS, err := parseTime("at", at, now)
		if err != nil {
			return err
		}
		res, err := client.GetStateAt(ctx, connect.NewRequest(&auditv1.GetStateAtRequest{Project: c.project, At: atTS}))
		if err != nil {
			return err
		}
		if c.output == "json" {
			return printJSON(stdout, res.Msg)
		}
		fmt.Fprintf(stdout, "Project %s at %s (stream up to sequence %d)\n\n", c.project, atTS.AsTime().UTC().Format(time.RFC3339), res.Msg.GetSequence())
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DEPLOYMENT\tSTATUS\tAUTH\tKEYS")
		for _, d := range res.Msg.GetDeployments() {
			auth := "off"
			if d.GetAuthEnabled() {
				auth = "on"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.GetName(), d.GetStatus(), auth, orDash(strings.Join(d.GetApiKeys(), ",")))
		}
		fmt.Fprintln(tw, "\t\t\t")
		fmt.Fprintln(tw, "KEY\tEXPIRES\tEXPIRED\tDEPLOYMENTS")
		for _, k := range res.Msg.GetKeys() {
			expires := "never"
			if k.GetExpiresAt() != nil {
				expires = k.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", k.GetName(), expires, k.GetExpired(), orDash(strings.Join(k.GetDeploymentNames(), ",")))
		}
		return tw.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
