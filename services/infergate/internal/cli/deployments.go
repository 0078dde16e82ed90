package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
)

func runDeployments(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: infergate deployments create|list|get|delete|auth|link|unlink|usage …")
		return errUsage
	}
	sub, args := args[0], args[1:]
	var c common
	fs := flag.NewFlagSet("infergate deployments "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	var (
		model, upstream, regions, keys string
		auth, enable, disable          bool
		pos                            []string
		err                            error
	)
	switch sub {
	case "create":
		fs.StringVar(&model, "model", "", "the model it serves (required)")
		fs.StringVar(&upstream, "upstream", "", "the OpenAI-compatible upstream URL (required)")
		fs.StringVar(&regions, "regions", "", "regions to serve it in, comma-separated (default: every region)")
		fs.BoolVar(&auth, "auth", false, "require a linked API key")
		fs.StringVar(&keys, "keys", "", "key names to link, comma-separated")
		pos, err = parse(fs, args, "NAME")
	case "auth":
		fs.BoolVar(&enable, "enable", false, "require a linked API key")
		fs.BoolVar(&disable, "disable", false, "let every request through")
		fs.StringVar(&keys, "keys", "", "the complete set of linked key names, comma-separated (others are unlinked)")
		pos, err = parse(fs, args, "NAME")
	case "get", "delete":
		pos, err = parse(fs, args, "NAME")
	case "usage":
		return runDeploymentUsage(ctx, &c, fs, args, stdout)
	case "link", "unlink":
		pos, err = parse(fs, args, "NAME", "KEY")
	case "list":
		pos, err = parse(fs, args)
	default:
		fmt.Fprintf(stderr, "unknown deployments command %q\n", sub)
		return errUsage
	}
	if err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	if sub == "auth" && enable == disable {
		fmt.Fprintln(stderr, "deployments auth needs exactly one of --enable and --disable")
		return errUsage
	}
	client, err := c.deploymentsClient()
	if err != nil {
		return err
	}
	// show prints a deployment and, for changes, how far they have reached.
	show := func(msg proto.Message, d *deploymentv1.Deployment, p *propagationv1.Propagation) error {
		if m, ok := msg.(interface{ GetReadModelBehind() bool }); ok {
			noteReadModel(stderr, m.GetReadModelBehind())
		}
		if c.output == "json" {
			return printJSON(stdout, msg)
		}
		printDeployments(stdout, d)
		if p != nil {
			fmt.Fprintf(stdout, "\n%s\n", describePropagation(p))
		}
		return nil
	}
	switch sub {
	case "create":
		res, err := client.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
			Project: c.project, Name: pos[0], Model: model, UpstreamUrl: upstream,
			Regions: splitList(regions), AuthEnabled: auth, ApiKeys: splitList(keys),
		}))
		if err != nil {
			return err
		}
		return show(res.Msg, res.Msg.GetDeployment(), res.Msg.GetPropagation())
	case "list":
		deps, err := allPages(func(token string) ([]*deploymentv1.Deployment, string, error) {
			res, err := client.ListDeployments(ctx, connect.NewRequest(&deploymentv1.ListDeploymentsRequest{Project: c.project, PageSize: 1000, PageToken: token}))
			if err != nil {
				return nil, "", err
			}
			return res.Msg.GetDeployments(), res.Msg.GetNextPageToken(), nil
		})
		if err != nil {
			return err
		}
		all := &deploymentv1.ListDeploymentsResponse{Deployments: deps}
		if c.output == "json" {
			return printJSON(stdout, all)
		}
		last := fetchLastUsed(ctx, &c, stderr)
		printDeploymentTable(stdout, &last, all.GetDeployments()...)
		return nil
	case "get":
		res, err := client.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: c.project, Name: pos[0]}))
		if err != nil {
			return err
		}
		if c.output == "json" {
			return show(res.Msg, res.Msg.GetDeployment(), nil)
		}
		last := fetchLastUsed(ctx, &c, stderr)
		printDeploymentTable(stdout, &last, res.Msg.GetDeployment())
		return nil
	case "auth":
		res, err := client.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
			Project: c.project, Name: pos[0], AuthEnabled: enable, ApiKeys: splitList(keys),
		}))
		if err != nil {
			return err
		}
		return show(res.Msg, res.Msg.GetDeployment(), res.Msg.GetPropagation())
	case "link":
		res, err := client.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: c.project, Deployment: pos[0], Key: pos[1]}))
		if err != nil {
			return err
		}
		return show(res.Msg, res.Msg.GetDeployment(), res.Msg.GetPropagation())
	case "unlink":
		res, err := client.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: c.project, Deployment: pos[0], Key: pos[1]}))
		if err != nil {
			return err
		}
		return show(res.Msg, res.Msg.GetDeployment(), res.Msg.GetPropagation())
	default: // delete
		res, err := client.DeleteDeployment(ctx, connect.NewRequest(&deploymentv1.DeleteDeploymentRequest{Project: c.project, Name: pos[0]}))
		if err != nil {
			return err
		}
		noteReadModel(stderr, res.Msg.GetReadModelBehind())
		if c.output == "json" {
			return printJSON(stdout, res.Msg)
		}
		fmt.Fprintf(stdout, "Deleted deployment %s; %s\n", pos[0], describePropagation(res.Msg.GetPropagation()))
		return nil
	}
}

func printDeployments(w io.Writer, deps ...*deploymentv1.Deployment) {
	printDeploymentTable(w, nil, deps...)
}

// printDeploymentTable prints deployments, with a LAST USED column when
// last is set.
func printDeploymentTable(w io.Writer, last *lastUsed, deps ...*deploymentv1.Deployment) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	lastCol := ""
	if last != nil {
		lastCol = "\tLAST USED"
	}
	fmt.Fprintln(tw, "NAME\tMODEL\tSTATUS\tAUTH\tKEYS\tREGIONS\tENDPOINT"+lastCol)
	for _, d := range deps {
		status := strings.TrimPrefix(d.GetStatus().String(), "DEPLOYMENT_STATUS_")
		if d.GetStatusReason() != "" {
			status += " (" + d.GetStatusReason() + ")"
		}
		auth := "off"
		if d.GetAuthEnabled() {
			auth = "on"
		}
		keys := strings.Join(d.GetApiKeys(), ",")
		if keys == "" {
			keys = "-"
		}
		regions := strings.Join(d.GetRegions(), ",")
		if regions == "" {
			regions = "all"
		}
		if last != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.GetName(), d.GetModel(), status, auth, keys, regions, d.GetEndpointUrl(), last.deployment(d.GetName()))
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.GetName(), d.GetModel(), status, auth, keys, regions, d.GetEndpointUrl())
	}
	tw.Flush()
}

// describePropagation says how far a change has reached the gateways, and
// names every gateway that had not applied it.
func describePropagation(p *propagationv1.Propagation) string {
	if p == nil {
		return "no propagation receipt"
	}
	waited := ""
	if p.GetWaited() != nil {
		waited = fmt.Sprintf(" in %s", roundDuration(p.GetWaited().AsDuration()))
	}
	var out string
	switch {
	case p.GetConfirmed() && p.GetGatewaysApplied() == p.GetGateways():
		out = fmt.Sprintf("applied at %d/%d gateways%s (stream sequence %d)", p.GetGatewaysApplied(), p.GetGateways(), waited, p.GetSequence())
	case p.GetConfirmed():
		out = fmt.Sprintf("confirmed: applied at %d/%d gateways%s, the others refuse as stale (stream sequence %d)",
			p.GetGatewaysApplied(), p.GetGateways(), waited, p.GetSequence())
	case p.GetGateways() == 0:
		return fmt.Sprintf("stream sequence %d; not confirmed: no live gateway reported", p.GetSequence())
	default:
		out = fmt.Sprintf("stream sequence %d; NOT confirmed: applied at %d/%d gateways%s, %d behind",
			p.GetSequence(), p.GetGatewaysApplied(), p.GetGateways(), waited, p.GetGateways()-p.GetGatewaysApplied())
	}
	for _, l := range p.GetLagging() {
		state := "lagging"
		if l.GetRefusingAsStale() {
			state = "refusing as stale"
		}
		heard := "never heard"
		if l.GetLastHeard() != nil {
			heard = "last heard " + l.GetLastHeard().AsTime().UTC().Format(time.RFC3339)
		}
		other := ""
		if l.GetOtherStream() != "" {
			other = ", on another stream " + l.GetOtherStream()
		}
		out += fmt.Sprintf("\n  %s (%s): %s, applied %d%s, %s", l.GetId(), l.GetRegion(), state, l.GetAppliedSequence(), other, heard)
	}
	return out
}

func roundDuration(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}
