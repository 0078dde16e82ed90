package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
)

func runKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: infergate keys create|list|get|update|delete|rotate|usage …")
		return errUsage
	}
	sub, args := args[0], args[1:]
	var c common
	fs := flag.NewFlagSet("infergate keys "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	var (
		description string
		expiresIn   time.Duration
		expiresAt   string
		grace       time.Duration
		never       bool
		deployments string
		pos         []string
		err         error
	)
	switch sub {
	case "create":
		fs.StringVar(&description, "description", "", "what the key is for (at most 300 characters)")
		fs.DurationVar(&expiresIn, "expires-in", 0, "expire after this long, e.g. 720h (default: never)")
		fs.StringVar(&expiresAt, "expires-at", "", "expire at this RFC 3339 time (default: never)")
		fs.StringVar(&deployments, "deployments", "", "deployments to link the key to, comma-separated, in the same change")
		pos, err = parse(fs, args, "NAME")
	case "update":
		fs.StringVar(&description, "description", "", "the new description (\"\" clears it; default: unchanged)")
		fs.DurationVar(&expiresIn, "expires-in", 0, "expire after this long from now, e.g. 720h (default: unchanged)")
		fs.StringVar(&expiresAt, "expires-at", "", "expire at this RFC 3339 time (default: unchanged)")
		fs.BoolVar(&never, "never-expires", false, "remove the key's expiry: it never expires")
		pos, err = parse(fs, args, "NAME")
	case "get", "delete":
		pos, err = parse(fs, args, "NAME")
	case "rotate":
		fs.DurationVar(&grace, "grace", 24*time.Hour, "how long the old secret keeps working, at most 720h; 0 stops it at once")
		pos, err = parse(fs, args, "NAME")
	case "list":
		pos, err = parse(fs, args)
	case "usage":
		return runKeyUsage(ctx, &c, fs, args, stdout)
	default:
		fmt.Fprintf(stderr, "unknown keys command %q\n", sub)
		return errUsage
	}
	if err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	client, err := c.keysClient()
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		req := &keyv1.CreateKeyRequest{Project: c.project, Name: pos[0], Description: description, DeploymentNames: splitList(deployments)}
		if expiresIn != 0 && expiresAt != "" {
			return fmt.Errorf("use --expires-in or --expires-at, not both")
		}
		if req.ExpiresAt, err = expiryOf(expiresIn, expiresAt); err != nil {
			return err
		}
		res, err := client.CreateKey(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		if res.Msg.GetReplayed() {
			// The first attempt created the key, but its answer — the only
			// one with the secret — was lost on the way.
			if c.output == "json" {
				_ = printJSON(stdout, res.Msg)
			} else {
				printKeys(stdout, res.Msg.GetKey())
			}
			return fmt.Errorf("%w: key %q was created by an earlier attempt of this command whose answer was lost; "+
				"its secret cannot be shown again. Delete it and create it again: infergate keys delete %[2]s && infergate keys create %[2]s",
				errSecretLost, pos[0])
		}
		fmt.Fprintln(stderr, "WARNING: the secret is shown only now. It cannot be shown again: store it safely.")
		if c.output == "json" {
			return printJSON(stdout, res.Msg)
		}
		printKeys(stdout, res.Msg.GetKey())
		fmt.Fprintf(stdout, "\nSecret (send it as the X-API-Key header):\n  %s\n", res.Msg.GetSecret())
		if p := res.Msg.GetPropagation(); p != nil {
			fmt.Fprintf(stdout, "\n%s\n", describePropagation(p))
		}
		noteReadModel(stderr, res.Msg.GetReadModelBehind())
		return nil
	case "list":
		keys, err := allPages(func(token string) ([]*keyv1.Key, string, error) {
			res, err := client.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: c.project, PageSize: 1000, PageToken: token}))
			if err != nil {
				return nil, "", err
			}
			return res.Msg.GetKeys(), res.Msg.GetNextPageToken(), nil
		})
		if err != nil {
			return err
		}
		all := &keyv1.ListKeysResponse{Keys: keys}
		if c.output == "json" {
			return printJSON(stdout, all)
		}
		last := fetchLastUsed(ctx, &c, stderr)
		printKeyTable(stdout, &last, all.GetKeys()...)
		return nil
	case "get":
		res, err := client.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: c.project, Name: pos[0]}))
		if err != nil {
			return err
		}
		if c.output == "json" {
			return printJSON(stdout, res.Msg)
		}
		printKeys(stdout, res.Msg.GetKey())
		if k := res.Msg.GetKey(); k.GetPreviousSecretNotAfter() != nil && k.GetPreviousSecretNotAfter().AsTime().After(time.Now()) {
			fmt.Fprintf(stdout, "\nRotated %s; the old secret (%s) works until %s.\n", k.GetRotatedAt().AsTime().UTC().Format(time.RFC3339),
				k.GetPreviousHint(), k.GetPreviousSecretNotAfter().AsTime().UTC().Format(time.RFC3339))
		}
		return nil
	case "update":
		req := &keyv1.UpdateKeyRequest{Project: c.project, Name: pos[0], NeverExpires: never}
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "description" {
				req.Description = &description
			}
		})
		if btoi(expiresIn != 0)+btoi(expiresAt != "")+btoi(never) > 1 {
			return fmt.Errorf("use one of --expires-in, --expires-at and --never-expires")
		}
		if req.ExpiresAt, err = expiryOf(expiresIn, expiresAt); err != nil {
			return err
		}
		res, err := client.UpdateKey(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		noteReadModel(stderr, res.Msg.GetReadModelBehind())
		if c.output == "json" {
			return printJSON(stdout, res.Msg)
		}
		printKeys(stdout, res.Msg.GetKey())
		return nil
	case "rotate":
		return rotateKey(ctx, client, c, pos[0], grace, stdout, stderr)
	default: // delete
		res, err := client.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: c.project, Name: pos[0]}))
		if err != nil {
			return err
		}
		noteReadModel(stderr, res.Msg.GetReadModelBehind())
		if c.output == "json" {
			return printJSON(stdout, res.Msg)
		}
		fmt.Fprintf(stdout, "Deleted key %s; %s\n", pos[0], describePropagation(res.Msg.GetPropagation()))
		return nil
	}
}

// rotateKey gives the key a new secret and prints it, once, with when the
// old one stops.
func rotateKey(ctx context.Context, client keyv1connect.KeyServiceClient, c common, name string, grace time.Duration, stdout, stderr io.Writer) error {
	res, err := client.RotateKey(ctx, connect.NewRequest(&keyv1.RotateKeyRequest{Project: c.project, Name: name, GracePeriod: durationpb.New(grace)}))
	if err != nil {
		return err
	}
	m := res.Msg
	if m.GetReplayed() {
		// An earlier attempt of this command rotated the key, but its
		// answer — the only one with the new secret — was lost.
		if c.output == "json" {
			_ = printJSON(stdout, m)
		} else {
			printKeys(stdout, m.GetKey())
		}
		return fmt.Errorf("%w: key %q was rotated by an earlier attempt of this command whose answer was lost; "+
			"its new secret cannot be shown again. Rotate again: infergate keys rotate %[2]s (the old secret keeps its grace; the lost one works only for the new grace)",
			errSecretLost, name)
	}
	fmt.Fprintln(stderr, "WARNING: the new secret is shown only now. It cannot be shown again: store it safely.")
	noteReadModel(stderr, m.GetReadModelBehind())
	if c.output == "json" {
		return printJSON(stdout, m)
	}
	printKeys(stdout, m.GetKey())
	fmt.Fprintf(stdout, "\nNew secret (send it as the X-API-Key header):\n  %s\n", m.GetSecret())
	stop := m.GetOldSecretNotAfter().AsTime().UTC()
	if !stop.After(m.GetKey().GetRotatedAt().AsTime()) {
		fmt.Fprintf(stdout, "The old secret (%s) stopped working at once.\n", m.GetKey().GetPreviousHint())
	} else {
		fmt.Fprintf(stdout, "The old secret (%s) keeps working until %s (in %s).\n", m.GetKey().GetPreviousHint(),
			stop.Format(time.RFC3339), time.Until(stop).Round(time.Second))
	}
	fmt.Fprintf(stdout, "Rotation %s\n", describePropagation(m.GetPropagation()))
	return nil
}

func printKeys(w io.Writer, keys ...*keyv1.Key) { printKeyTable(w, nil, keys...) }

// printKeyTable prints keys, with a LAST USED column when last is set.
func printKeyTable(w io.Writer, last *lastUsed, keys ...*keyv1.Key) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	lastCol := ""
	if last != nil {
		lastCol = "LAST USED\t"
	}
	fmt.Fprintln(tw, "NAME\tHINT\tEXPIRES\tDEPLOYMENTS\tCREATED\t"+lastCol+"DESCRIPTION")
	for _, k := range keys {
		expires := "never"
		if k.GetExpiresAt() != nil {
			expires = k.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
			if k.GetExpiresAt().AsTime().Before(time.Now()) {
				expires += " (expired)"
			}
		}
		deps := strings.Join(k.GetDeploymentNames(), ",")
		if deps == "" {
			deps = "-"
		}
		if last != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.GetName(), k.GetHint(), expires, deps,
				k.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), last.key(k.GetName()), k.GetDescription())
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.GetName(), k.GetHint(), expires, deps,
			k.GetCreatedAt().AsTime().UTC().Format(time.RFC3339), k.GetDescription())
	}
	tw.Flush()
}

func jsonLine(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// expiryOf is the expiry --expires-in or --expires-at give (at most one of
// them is set), nil when neither is.
func expiryOf(in time.Duration, at string) (*timestamppb.Timestamp, error) {
	switch {
	case in != 0:
		return timestamppb.New(time.Now().Add(in)), nil
	case at != "":
		t, err := time.Parse(time.RFC3339, at)
		if err != nil {
			return nil, fmt.Errorf("--expires-at: %w", err)
		}
		return timestamppb.New(t), nil
	}
	return nil, nil
}
