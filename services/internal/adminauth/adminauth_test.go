package adminauth_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/infergate/infergate/services/internal/adminauth"
)

func TestTokensFile(t *testing.T) {
	t.Parallel()
	opsToken, ops, err := adminauth.New("ops", []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	teamToken, team, err := adminauth.New("team-a", []string{"team-a", "team-c"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(opsToken, adminauth.TokenPrefix) || opsToken == teamToken {
		t.Fatalf("tokens %q, %q", opsToken, teamToken)
	}
	path := filepath.Join(t.TempDir(), "tokens.json")
	data := fmt.Sprintf(`[{"name":%q,"sha256":%q,"projects":["*"]},{"name":%q,"sha256":%q,"projects":["team-a","team-c"]}]`,
		ops.Name, ops.SHA256, team.Name, team.SHA256)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(data, opsToken) || strings.Contains(data, teamToken) {
		t.Fatal("the tokens file holds a plaintext token")
	}
	tokens, err := adminauth.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tokens.Authenticate(opsToken)
	if err != nil || p.Name != "ops" || !p.Allows("anything") {
		t.Errorf("ops = %+v, %v", p, err)
	}
	p, err = tokens.Authenticate(teamToken)
	if err != nil || p.Name != "team-a" || !p.Allows("team-c") || p.Allows("team-b") {
		t.Errorf("team = %+v, %v", p, err)
	}
	for _, bad := range []string{"", "igadm_nope", opsToken + "x"} {
		if _, err := tokens.Authenticate(bad); !errors.Is(err, adminauth.ErrUnauthenticated) {
			t.Errorf("Authenticate(%q) = %v", bad, err)
		}
	}
}

func TestBadTokensFiles(t *testing.T) {
	t.Parallel()
	hash := strings.Repeat("ab", 32)
	for name, data := range map[string]string{
		"not json":       `{`,
		"empty":          `[]`,
		"no name":        `[{"sha256":"` + hash + `","projects":["*"]}]`,
		"short hash":     `[{"name":"a","sha256":"abcd","projects":["*"]}]`,
		"no projects":    `[{"name":"a","sha256":"` + hash + `"}]`,
		"repeated name":  `[{"name":"a","sha256":"` + hash + `","projects":["*"]},{"name":"a","sha256":"` + strings.Repeat("cd", 32) + `","projects":["*"]}]`,
		"repeated token": `[{"name":"a","sha256":"` + hash + `","projects":["*"]},{"name":"b","sha256":"` + hash + `","projects":["*"]}]`,
	} {
		if _, err := adminauth.Parse([]byte(data)); !errors.Is(err, adminauth.ErrBadTokensFile) {
			t.Errorf("%s: Parse = %v, want ErrBadTokensFile", name, err)
		}
	}
}
