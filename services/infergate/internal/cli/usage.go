package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/gen/infergate/usage/v1/usagev1connect"
)

func (c *common) usageClient() (usagev1connect.UsageServiceClient, error) {
	url, opts, err := c.endpoint()
	if err != nil {
		return nil, err
	}
	return usagev1connect.NewUsageServiceClient(http.DefaultClient, url, opts...), nil
}

// lastUsed is when each key and each deployment of the project was last
// used, formatted for a table ("never" when not at all). When the usage
// service does not answer, every entry reads "?" and stderr says why: the
// listing itself still works.
type lastUsed struct {
	keys, deployments map[string]time.Time
	err               error
}

func fetchLastUsed(ctx context.Context, c *common, stderr io.Writer) lastUsed {
	var l lastUsed
	client, err := c.usageClient()
	if err == nil {
		var res *connect.Response[usagev1.ListLastUsedResponse]
		if res, err = client.ListLastUsed(ctx, connect.NewRequest(&usagev1.ListLastUsedRequest{Project: c.project})); err == nil {
			l.keys, l.deployments = map[string]time.Time{}, map[string]time.Time{}
			for _, k := range res.Msg.GetKeys() {
				l.keys[k.GetName()] = k.GetLastUsed().AsTime()
			}
			for _, d := range res.Msg.GetDeployments() {
				l.deployments[d.GetName()] = d.GetLastUsed().AsTime()
			}
		}
	}
	if err != nil {
		l.err = err
		fmt.Fprintf(stderr, "note: LAST USED unknown: %v\n", err)
	}
	return l
}

func (l lastUsed) key(name string) string        { return l.format(l.keys, name) }
func (l lastUsed) deployment(name string) string { return l.format(l.deployments, name) }

func (l lastUsed) format(m map[string]time.Time, name string) string {
	if l.err != nil {
		return "?"
	}
	t, ok := m[name]
	if !ok {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// runKeyUsage is `infergate keys usage NAME`: the key's requests by
// deployment and status class over a time range, and its tokens.
func runKeyUsage(ctx context.Context, c *common, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	return runUsage(ctx, c, fs, args, stdout, false)
}

// runDeploymentUsage is `infergate deployments usage NAME`: the
// deployment's requests by key ("(no key)" for requests without a known
// key) and status class, and its tokens.
func runDeploymentUsage(ctx context.Context, c *common, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	return runUsage(ctx, c, fs, args, stdout, true)
}

func runUsage(ctx context.Context, c *common, fs *flag.FlagSet, args []string, stdout io.Writer, ofDeployment bool) error {
	since := fs.String("since", "-24h", "from this time (RFC 3339 or relative, e.g. -24h)")
	until := fs.String("until", "", "until this time (RFC 3339 or relative; default now)")
	other := fs.String("deployment", "", "only this deployment")
	if ofDeployment {
		other = fs.String("key", "", "only this key")
	}
	step := fs.Duration("step", 0, "with --series: the width of the series' buckets, whole minutes (default: about 60 buckets)")
	series := fs.Bool("series", false, "print the time series too")
	pos, err := parse(fs, args, "NAME")
	if err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	now := time.Now()
	sinceTS, err := parseTime("since", *since, now)
	if err != nil {
		return err
	}
	untilTS, err := parseTime("until", *until, now)
	if err != nil {
		return err
	}
	client, err := c.usageClient()
	if err != nil {
		return err
	}
	var (
		u     *usagev1.Usage
		parts []*usagev1.Breakdown
		msg   proto.Message
		what  = "Key"
		col   = "DEPLOYMENT"
	)
	if ofDeployment {
		res, err := client.GetDeploymentUsage(ctx, connect.NewRequest(&usagev1.GetDeploymentUsageRequest{
			Project: c.project, Name: pos[0], Key: *other, Since: sinceTS, Until: untilTS, StepSeconds: int64(step.Seconds())}))
		if err != nil {
			return err
		}
		u, parts, msg, what, col = res.Msg.GetUsage(), res.Msg.GetKeys(), res.Msg, "Deployment", "KEY"
	} else {
		res, err := client.GetKeyUsage(ctx, connect.NewRequest(&usagev1.GetKeyUsageRequest{
			Project: c.project, Name: pos[0], Deployment: *other, Since: sinceTS, Until: untilTS, StepSeconds: int64(step.Seconds())}))
		if err != nil {
			return err
		}
		u, parts, msg = res.Msg.GetUsage(), res.Msg.GetDeployments(), res.Msg
	}
	if c.output == "json" {
		return printJSON(stdout, msg)
	}
	last := "never"
	if u.GetLastUsed() != nil {
		last = u.GetLastUsed().AsTime().UTC().Format(time.RFC3339)
	}
	from, to := now.Add(-24*time.Hour), now
	if sinceTS != nil {
		from = sinceTS.AsTime()
	}
	if untilTS != nil {
		to = untilTS.AsTime()
	}
	fmt.Fprintf(stdout, "%s %s (project %s), %s to %s; last used %s\n\n", what, pos[0], c.project,
		from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), last)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, col+"\tREQUESTS\tOK\t4XX\t5XX\tREFUSED\tPROMPT TOKENS\tCOMPLETION TOKENS\tLAST USED\t")
	for _, d := range parts {
		l := "never"
		if d.GetLastUsed() != nil {
			l = d.GetLastUsed().AsTime().UTC().Format(time.RFC3339)
		}
		name := d.GetName()
		if name == "" {
			name = "(no key)"
		}
		usageRow(tw, name, d.GetCounts(), l)
	}
	usageRow(tw, "TOTAL", u.GetTotal(), "")
	if err := tw.Flush(); err != nil {
		return err
	}
	if *series {
		fmt.Fprintln(stdout)
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "FROM\tREQUESTS\tOK\t4XX\t5XX\tREFUSED\tPROMPT TOKENS\tCOMPLETION TOKENS\t\t")
		for _, b := range u.GetSeries() {
			usageRow(tw, b.GetStart().AsTime().UTC().Format(time.RFC3339), b.GetCounts(), "")
		}
		return tw.Flush()
	}
	return nil
}

func usageRow(w io.Writer, name string, c *usagev1.Counts, last string) {
	n := func(v uint64) string { return strconv.FormatUint(v, 10) }
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", name,
		n(c.GetOk()+c.GetClientErrors()+c.GetServerErrors()+c.GetRefused()), n(c.GetOk()), n(c.GetClientErrors()),
		n(c.GetServerErrors()), n(c.GetRefused()), n(c.GetPromptTokens()), n(c.GetCompletionTokens()), last)
}
