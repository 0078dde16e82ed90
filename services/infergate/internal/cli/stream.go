package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/snapshots"
)

const streamUsage = `usage:
  infergate admin stream create --replicas N [--duplicate-window D] [--memory] [--stream events|usage]
  infergate admin stream update [--replicas N] [--duplicate-window D] [--stream events|usage]
  infergate admin stream info [--stream events|usage]
  infergate admin stream create-mirror --domain REGION [--hub-nats-url URL --hub-nats-nkey FILE | --hub-domain hub] [--replicas N] [--snapshot-max-bytes N] [--memory]
flags of each: --nats-url (env INFERGATE_NATS_URL), --nats-nkey (env INFERGATE_NATS_NKEY), --nats-ca (env INFERGATE_NATS_CA), -o table|json`

// runAdmin runs `infergate admin …`: the operator's commands that talk to
// NATS directly, not to the control plane.
func runAdmin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "stream" {
		fmt.Fprintln(stderr, streamUsage)
		return errUsage
	}
	return runStream(ctx, args[1:], stdout, stderr)
}

// runStream creates, changes or shows the event stream: the only place its
// configuration is written (services and gateways only bind and verify).
func runStream(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, streamUsage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("infergate admin stream "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats-url", envOr("INFERGATE_NATS_URL", nats.DefaultURL), "NATS server URLs, comma-separated (env INFERGATE_NATS_URL)")
	natsNkey := fs.String("nats-nkey", os.Getenv("INFERGATE_NATS_NKEY"), "nkey seed file of the control plane's NATS user, which may manage the stream (env INFERGATE_NATS_NKEY)")
	natsCA := fs.String("nats-ca", os.Getenv("INFERGATE_NATS_CA"), "CA file for the NATS servers' TLS certificates; default the system's (env INFERGATE_NATS_CA)")
	output := fs.String("o", "table", "output: table or json")
	which := "events"
	var cfg eventstore.Config
	switch sub {
	case "create", "update", "info":
		fs.StringVar(&which, "stream", "events", "the stream: events (INFERGATE_EVENTS, the source of truth) or usage (INFERGATE_USAGE, the gateways' usage counts; docs/usage.md)")
	}
	switch sub {
	case "create", "update":
		fs.IntVar(&cfg.Replicas, "replicas", 0, "replicas of the stream: 3 on a production cluster, 1 on a single server (update: default keeps it)")
		fs.DurationVar(&cfg.DuplicateWindow, "duplicate-window", 0, "how long retried appends are recognised, at least 2m (create: default 2m; update: default keeps it)")
		fs.BoolVar(&cfg.Memory, "memory", false, "keep the stream in memory, not in files (tests and demos only: a NATS restart loses every event; update never changes storage)")
	case "create-mirror":
		return runCreateMirror(ctx, fs, args, natsURL, natsNkey, natsCA, output, stdout)
	case "info":
	default:
		fmt.Fprintf(stderr, "unknown admin stream command %q\n%s\n", sub, streamUsage)
		return errUsage
	}
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o must be table or json, not %q", *output)
	}
	switch which {
	case "events":
	case "usage":
		u := eventstore.UsageConfig()
		cfg.Stream, cfg.SubjectPrefix, cfg.Raw = u.Stream, u.SubjectPrefix, u.Raw
	default:
		return fmt.Errorf("--stream must be events or usage, not %q", which)
	}
	if sub == "create" && cfg.Replicas == 0 {
		fmt.Fprintln(stderr, "--replicas is required: 3 on a production cluster, 1 on a single server")
		return errUsage
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := adminConnect(*natsURL, *natsNkey, *natsCA)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var info *jetstream.StreamInfo
	switch sub {
	case "create":
		info, err = eventstore.CreateStream(ctx, js, cfg)
	case "update":
		info, err = eventstore.UpdateStream(ctx, js, cfg)
	case "info":
		info, err = eventstore.Info(ctx, js, cfg)
	}
	if err != nil {
		return err
	}
	return printStream(stdout, *output, info, eventstore.Mismatches(cfg.Verify(info.Config)))
}

// adminConnect connects to NATS as the stream's owner: the control plane's
// NATS user (natsauth), the one identity that may create and update it.
func adminConnect(url, nkey, ca string) (*nats.Conn, error) {
	return connectAs(natsauth.Identity{Role: natsauth.ControlPlane}, url, nkey, ca)
}

// connectAs connects to NATS as id.
func connectAs(id natsauth.Identity, url, nkey, ca string) (*nats.Conn, error) {
	auth, err := id.ClientOptions(nkey, ca)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append([]nats.Option{nats.Name("infergate-admin")}, auth...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	return nc, nil
}

// runCreateMirror creates a region's mirrors of the hub's stream and of
// its snapshot bucket in the region's JetStream domain, and on the hub the
// durable consumers that feed them; the stream's mirror holds the hub
// stream's current life in its metadata, and run again after the hub's
// stream was recreated it replaces the mirror of the previous life
// (eventstore.CreateMirror, snapshots.CreateMirror). On the region's leaf
// server it connects as the region's admin (natsauth.RegionAdmin); on the
// hub as the control plane, which owns the stream.
func runCreateMirror(ctx context.Context, fs *flag.FlagSet, args []string, natsURL, natsNkey, natsCA, output *string, stdout io.Writer) error {
	var (
		cfg   eventstore.MirrorConfig
		snaps snapshots.MirrorConfig
	)
	domain := fs.String("domain", "", "the region's JetStream domain (its leaf server's), where the mirrors live; required")
	fs.StringVar(&cfg.OriginDomain, "hub-domain", eventstore.DefaultHubDomain, "the hub's JetStream domain, where the stream is")
	hubURL := fs.String("hub-nats-url", "", "the hub's NATS URLs, where the mirrors' feeds are made and the stream's life is read, as the control plane (--nats-url is then the region's leaf server); default: through --nats-url and the hub's domain, which a leaf server's users may not do")
	hubNkey := fs.String("hub-nats-nkey", os.Getenv("INFERGATE_HUB_NATS_NKEY"), "with --hub-nats-url: nkey seed file of the control plane's NATS user on the hub (env INFERGATE_HUB_NATS_NKEY); --nats-nkey is then the region admin's, on its leaf server")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "replicas of the mirrors in the region")
	fs.Int64Var(&snaps.MaxBytes, "snapshot-max-bytes", snapshots.DefaultMirrorMaxBytes, "bound of the region's copy of the snapshot bucket, which drops its oldest snapshots past it (a mirror does not copy the hub's purges); a few times the latest snapshot's size")
	fs.BoolVar(&cfg.Memory, "memory", false, "keep the mirrors in memory (tests and demos only)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *domain == "" {
		fmt.Fprintln(fs.Output(), "--domain is required: the region's JetStream domain")
		return errUsage
	}
	if snaps.MaxBytes <= 0 {
		return fmt.Errorf("--snapshot-max-bytes must be positive, not %d", snaps.MaxBytes)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, err := connectAs(natsauth.Identity{Role: natsauth.RegionAdmin, Region: *domain}, *natsURL, *natsNkey, *natsCA)
	if err != nil {
		return err
	}
	defer nc.Close()
	region, err := jetstream.NewWithDomain(nc, *domain)
	if err != nil {
		return err
	}
	hub, err := jetstream.NewWithDomain(nc, cfg.OriginDomain)
	if err != nil {
		return err
	}
	if *hubURL != "" {
		hnc, err := adminConnect(*hubURL, *hubNkey, *natsCA)
		if err != nil {
			return err
		}
		defer hnc.Close()
		if hub, err = jetstream.New(hnc); err != nil {
			return err
		}
		if region, err = jetstream.New(nc); err != nil {
			return err
		}
	}
	cfg.Region = *domain
	info, err := eventstore.CreateMirror(ctx, region, hub, cfg)
	if err != nil {
		return err
	}
	snaps.Region, snaps.OriginDomain, snaps.Replicas, snaps.Memory = *domain, cfg.OriginDomain, cfg.Replicas, cfg.Memory
	sinfo, err := snapshots.CreateMirror(ctx, region, hub, snaps)
	if err != nil {
		return err
	}
	v := struct {
		Mirror         string `json:"mirror"`
		Domain         string `json:"domain"`
		Of             string `json:"of"`
		Life           string `json:"origin_created"`
		LastSeq        uint64 `json:"last_seq"`
		Replicas       int    `json:"replicas"`
		Feed           string `json:"feed"`
		Snapshots      string `json:"snapshots_mirror"`
		SnapshotsBound int64  `json:"snapshots_max_bytes"`
	}{info.Config.Name, *domain, info.Config.Name + " in domain " + cfg.OriginDomain,
		info.Config.Metadata[eventstore.MetaOriginCreated], info.State.LastSeq, info.Config.Replicas,
		eventstore.Feed(info.Config.Name, *domain).Name, sinfo.Config.Name, sinfo.Config.MaxBytes}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintf(tw, "mirror\t%s (domain %s)\nof\t%s, created %s\nlast sequence\t%d\nreplicas\t%d\nfed by\tconsumer %s on the hub\nsnapshots\t%s (domain %s), at most %d bytes\n",
		v.Mirror, v.Domain, v.Of, v.Life, v.LastSeq, v.Replicas, v.Feed, v.Snapshots, v.Domain, v.SnapshotsBound)
	return tw.Flush()
}

// streamView is what `admin stream` prints.
type streamView struct {
	Stream          string    `json:"stream"`
	Subjects        []string  `json:"subjects"`
	Storage         string    `json:"storage"`
	Replicas        int       `json:"replicas"`
	Cluster         []string  `json:"cluster,omitempty"`
	DuplicateWindow string    `json:"duplicate_window"`
	Created         time.Time `json:"created"`
	Messages        uint64    `json:"messages"`
	FirstSeq        uint64    `json:"first_seq"`
	LastSeq         uint64    `json:"last_seq"`
	Bytes           uint64    `json:"bytes"`
	Matches         bool      `json:"matches_declaration"`
	Differences     []string  `json:"differences,omitempty"`
}

func printStream(w io.Writer, output string, info *jetstream.StreamInfo, diffs []*eventstore.MismatchError) error {
	c := info.Config
	v := streamView{
		Stream: c.Name, Subjects: c.Subjects, Storage: strings.ToLower(c.Storage.String()), Replicas: c.Replicas,
		DuplicateWindow: c.Duplicates.String(), Created: info.Created.UTC(),
		Messages: info.State.Msgs, FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Bytes: info.State.Bytes,
		Matches: len(diffs) == 0,
	}
	if cl := info.Cluster; cl != nil {
		if cl.Leader != "" {
			v.Cluster = append(v.Cluster, cl.Leader+" (leader)")
		}
		for _, p := range cl.Replicas {
			state := "current"
			if !p.Current {
				state = fmt.Sprintf("behind by %d", p.Lag)
			}
			if p.Offline {
				state = "offline"
			}
			v.Cluster = append(v.Cluster, p.Name+" ("+state+")")
		}
	}
	for _, d := range diffs {
		v.Differences = append(v.Differences, fmt.Sprintf("%s is %s, expected %s", d.Field, d.Actual, d.Expected))
	}
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "stream\t%s\n", v.Stream)
	fmt.Fprintf(tw, "subjects\t%s\n", strings.Join(v.Subjects, ", "))
	fmt.Fprintf(tw, "storage\t%s\n", v.Storage)
	fmt.Fprintf(tw, "replicas\t%d\n", v.Replicas)
	if len(v.Cluster) > 0 {
		fmt.Fprintf(tw, "cluster\t%s\n", strings.Join(v.Cluster, ", "))
	}
	fmt.Fprintf(tw, "duplicate window\t%s\n", v.DuplicateWindow)
	fmt.Fprintf(tw, "created\t%s\n", v.Created.Format(time.RFC3339))
	fmt.Fprintf(tw, "messages\t%d (sequences %d..%d, %d bytes)\n", v.Messages, v.FirstSeq, v.LastSeq, v.Bytes)
	if v.Matches {
		fmt.Fprintf(tw, "declaration\tmatches\n")
	}
	for i, d := range v.Differences {
		label := ""
		if i == 0 {
			label = "declaration"
		}
		fmt.Fprintf(tw, "%s\tdiffers: %s\n", label, d)
	}
	return tw.Flush()
}
