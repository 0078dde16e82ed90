// Package adminauth authenticates control-plane calls with admin tokens.
//
// Operators list tokens in a JSON file (--admin-tokens-file):
//
//	[{"name": "ops", "sha256": "<hex SHA-256 of the token>", "projects": ["*"]},
//	 {"name": "team-a", "sha256": "…", "projects": ["team-a"]}]
//
// Only hashes are stored. A call carries "Authorization: Bearer <token>";
// the token's name becomes the actor of every event the call causes.
package adminauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
)

// Errors a transport maps to unauthenticated and permission_denied.
var (
	ErrUnauthenticated  = errors.New("adminauth: missing or unknown admin token")
	ErrPermissionDenied = errors.New("adminauth: token not allowed on this project")
	ErrBadTokensFile    = errors.New("adminauth: bad tokens file")
)

// AllProjects in a token's projects grants every project.
const AllProjects = "*"

// TokenPrefix starts every admin token, so it is told apart from API keys.
const TokenPrefix = "igadm_"

// Entry is one line of the tokens file.
type Entry struct {
	Name     string   `json:"name"`
	SHA256   string   `json:"sha256"`
	Projects []string `json:"projects"`
}

// Principal is who a token says the caller is.
type Principal struct {
	Name     string
	projects []string
}

// Projects returns a copy of the projects the principal may act on ("*"
// for every project); the console's project switcher lists them.
func (p Principal) Projects() []string { return slices.Clone(p.projects) }

// Allows reports whether the principal may act on project.
func (p Principal) Allows(project string) bool {
	return slices.Contains(p.projects, AllProjects) || slices.Contains(p.projects, project)
}

// Tokens is the set of admin tokens, by hash.
type Tokens struct {
	byHash map[[sha256.Size]byte]Principal
}

// Parse reads the tokens file's JSON and reports every problem at once.
func Parse(data []byte) (*Tokens, error) {
	var entries []Entry
	if err := json.Unmarshal(data, &entries); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokensFile, err)
	}
	return FromEntries(entries)
}

// FromEntries builds the set from entries.
func FromEntries(entries []Entry) (*Tokens, error) {
	t := &Tokens{byHash: map[[sha256.Size]byte]Principal{}}
	names := map[string]bool{}
	var errs []error
	for i, e := range entries {
		raw, err := hex.DecodeString(e.SHA256)
		switch {
		case e.Name == "":
			errs = append(errs, fmt.Errorf("%w: entry %d: name is required", ErrBadTokensFile, i))
		case names[e.Name]:
			errs = append(errs, fmt.Errorf("%w: entry %d: name %q repeated", ErrBadTokensFile, i, e.Name))
		case err != nil || len(raw) != sha256.Size:
			errs = append(errs, fmt.Errorf("%w: entry %q: sha256 must be 64 hex digits", ErrBadTokensFile, e.Name))
		case len(e.Projects) == 0:
			errs = append(errs, fmt.Errorf("%w: entry %q: projects is empty (use [\"*\"] for all)", ErrBadTokensFile, e.Name))
		default:
			var h [sha256.Size]byte
			copy(h[:], raw)
			if _, dup := t.byHash[h]; dup {
				errs = append(errs, fmt.Errorf("%w: entry %q: the same token as another entry", ErrBadTokensFile, e.Name))
			}
			t.byHash[h] = Principal{Name: e.Name, projects: slices.Clone(e.Projects)}
		}
		names[e.Name] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(t.byHash) == 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrBadTokensFile)
	}
	return t, nil
}

// LoadFile reads a tokens file.
func LoadFile(path string) (*Tokens, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokensFile, err)
	}
	return Parse(data)
}

// Authenticate finds the principal of a bearer token.
func (t *Tokens) Authenticate(token string) (Principal, error) {
	if token == "" {
		return Principal{}, ErrUnauthenticated
	}
	p, ok := t.byHash[sha256.Sum256([]byte(token))]
	if !ok {
		return Principal{}, ErrUnauthenticated
	}
	return p, nil
}

// New makes a fresh token and the entry that admits it.
func New(name string, projects []string) (token string, entry Entry, err error) {
	var b strings.Builder
	b.WriteString(TokenPrefix)
	for range 43 {
		n, err := rand.Int(rand.Reader, big.NewInt(62))
		if err != nil {
			return "", Entry{}, fmt.Errorf("adminauth: random: %w", err)
		}
		b.WriteByte("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[n.Int64()])
	}
	token = b.String()
	sum := sha256.Sum256([]byte(token))
	return token, Entry{Name: name, SHA256: hex.EncodeToString(sum[:]), Projects: projects}, nil
}

type principalKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the interceptor authenticated.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// FromToken builds a set holding one token, for a process that made the
// token itself (the one-process stack).
func FromToken(name, token string, projects []string) (*Tokens, error) {
	sum := sha256.Sum256([]byte(token))
	return FromEntries([]Entry{{Name: name, SHA256: hex.EncodeToString(sum[:]), Projects: projects}})
}
