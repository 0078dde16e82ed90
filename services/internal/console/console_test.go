package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"

	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/aggregate"
)

func TestAPIErrorsAtTheirFields(t *testing.T) {
	t.Parallel()
	fields := map[string]string{"name": "name", "description": "description", "expires_at": "expires_at"}
	joined := errors.Join(
		&aggregate.FieldError{Field: "name", Problem: `"ab" is not a valid key name`},
		&aggregate.FieldError{Field: "description", Problem: "has 301 characters, at most 300 are allowed"},
		&aggregate.FieldError{Field: "project", Problem: "is required"},
	)
	for _, tc := range []struct {
		name    string
		err     error
		want    map[string]string
		general string
	}{
		{"invalid argument, one line per field", connect.NewError(connect.CodeInvalidArgument, joined),
			map[string]string{"name": `"ab" is not a valid key name.`, "description": "This field has 301 characters, at most 300 are allowed."},
			"Project: is required."},
		{"a list's element", connect.NewError(connect.CodeInvalidArgument, &aggregate.FieldError{Field: "expires_at[2]", Problem: "is bad"}),
			map[string]string{"expires_at": "This field is bad."}, ""},
		{"name taken", connect.NewError(connect.CodeAlreadyExists, errors.New(`already exists: key "x"`)),
			map[string]string{"name": "This name is taken in this project; choose another."}, ""},
		{"out of scope", connect.NewError(connect.CodePermissionDenied, errors.New("token may not")),
			nil, "This admin token may not use this project."},
		{"not a Connect error", errors.New("dial tcp: refused"), nil, "The control plane could not be reached; try again."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := apiErrors(tc.err, fields, "name")
			if fmt.Sprint(got.Fields) != fmt.Sprint(tc.want) && !(len(got.Fields) == 0 && len(tc.want) == 0) {
				t.Errorf("fields %q, want %q", got.Fields, tc.want)
			}
			if got.General != tc.general {
				t.Errorf("general %q, want %q", got.General, tc.general)
			}
		})
	}
}

func TestReceiptInWords(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		p    *propagationv1.Propagation
		want []string
	}{
		{"confirmed", &propagationv1.Propagation{Sequence: 9, Gateways: 3, GatewaysApplied: 3, Confirmed: true, Waited: durationpb.New(1200 * time.Microsecond)},
			[]string{"Applied at 3/3 gateways in 1.2 ms."}},
		{"lagging", &propagationv1.Propagation{Sequence: 9, Gateways: 2, GatewaysApplied: 1, Waited: durationpb.New(2 * time.Second),
			Lagging: []*propagationv1.LaggingGateway{{Id: "gw-eu-2", Region: "eu", AppliedSequence: 7, RefusingAsStale: true}}},
			[]string{"Applied at 1/2 gateways after 2.00 s; not yet confirmed everywhere.", "gw-eu-2 (region eu): applied up to #7 of #9, refusing requests as stale"}},
		{"no gateway", &propagationv1.Propagation{Sequence: 4}, []string{"No gateway serves this deployment's regions"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := receiptOf(tc.p)
			all := rc.Summary + "\n" + strings.Join(rc.Lagging, "\n")
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("receipt %q lacks %q", all, w)
				}
			}
		})
	}
}

// TestFormsNeedCSRF checks the guard in front of every POST without a
// browser: no token, a token of another session, and a cross-site POST
// are refused with 403 before any API call.
func TestFormsNeedCSRF(t *testing.T) {
	t.Parallel()
	token, entry, err := adminauth.New("ops", []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := adminauth.New("other", []string{"*"})
	tokens, err := adminauth.FromEntries([]adminauth.Entry{entry})
	if err != nil {
		t.Fatal(err)
	}
	// The API is unreachable: a request that passed the guard would fail
	// with 502, not 403.
	c, err := New(Config{KeysURL: "http://127.0.0.1:1", DeploymentsURL: "http://127.0.0.1:1", AuditURL: "http://127.0.0.1:1", Tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	post := func(form url.Values, header http.Header) int {
		req := httptest.NewRequest(http.MethodPost, "/console/p/default/keys", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: sessionCookie, Value: token})
		for k, v := range header {
			req.Header[k] = v
		}
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		header http.Header
		want   int
	}{
		{"no token", url.Values{"name": {"abcd"}}, nil, http.StatusForbidden},
		{"another session's token", url.Values{"name": {"abcd"}, "csrf": {csrfToken(other, "session")}}, nil, http.StatusForbidden},
		{"cross-site", url.Values{"name": {"abcd"}, "csrf": {csrfToken(token, "session")}}, http.Header{"Sec-Fetch-Site": {"cross-site"}}, http.StatusForbidden},
		{"valid", url.Values{"name": {"abcd"}, "never": {"1"}, "csrf": {csrfToken(token, "session")}}, nil, http.StatusBadGateway},
	} {
		if got := post(tc.form, tc.header); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
