package upstreampolicy_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/infergate/infergate/services/internal/upstreampolicy"
)

func TestCheckIP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		allow, ip string
		rule      string // "" = allowed
	}{
		{"", "127.0.0.1", "loopback"},
		{"", "127.255.255.254", "loopback"},
		{"", "::1", "loopback"},
		{"", "::ffff:127.0.0.1", "loopback"}, // IPv4-mapped
		{"", "64:ff9b::7f00:1", "loopback"},  // NAT64 of 127.0.0.1
		{"", "169.254.169.254", "link-local"},
		{"", "::ffff:169.254.169.254", "link-local"},
		{"", "64:ff9b::a9fe:a9fe", "link-local"},
		{"", "fe80::1", "link-local"},
		{"", "fe80::1%eth0", "link-local"}, // a zone must not hide it
		{"", "febf::1", "link-local"},
		{"", "0.0.0.0", "unspecified"},
		{"", "0.1.2.3", "unspecified"},
		{"", "::", "unspecified"},
		{"", "10.0.0.5", ""},
		{"", "192.168.1.10", ""},
		{"", "8.8.8.8", ""},
		{"", "fd00::1", ""},
		{"", "2001:db8::1", ""},
		{"", "64:ff9b::808:808", ""},
		{"", "128.0.0.1", ""},
		{"", "169.255.0.1", ""},
		{upstreampolicy.Loopback, "127.0.0.1", ""},
		{upstreampolicy.Loopback, "127.1.2.3", ""},
		{upstreampolicy.Loopback, "::1", ""},
		{upstreampolicy.Loopback, "::ffff:127.0.0.1", ""},
		{upstreampolicy.Loopback, "169.254.169.254", "link-local"},
		{upstreampolicy.Loopback, "0.0.0.0", "unspecified"},
		{"127.0.0.1", "127.0.0.2", "loopback"},
		{"169.254.10.0/24", "169.254.10.7", ""},
		{"169.254.10.0/24", "169.254.169.254", "link-local"},
		{"fe80::/10", "fe80::1%eth0", ""},
		{"127.0.0.1", "64:ff9b::7f00:1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.allow+"/"+tt.ip, func(t *testing.T) {
			p := upstreampolicy.MustParse(tt.allow)
			err := p.CheckIP(netip.MustParseAddr(tt.ip))
			assertRule(t, err, tt.rule)
		})
	}
}

func assertRule(t *testing.T, err error, rule string) {
	t.Helper()
	if rule == "" {
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return
	}
	var re *upstreampolicy.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, upstreampolicy.ErrRefused) {
		t.Fatalf("err = %v, want a %s refusal", err, rule)
	}
	if re.Rule != rule {
		t.Fatalf("rule = %q, want %q (%v)", re.Rule, rule, err)
	}
	if !strings.Contains(err.Error(), rule) {
		t.Errorf("message %q does not name the rule %q", err, rule)
	}
}

// resolver answers from a table; unknown names are not found.
type resolver map[string][]string

func (r resolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	list, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var addrs []netip.Addr
	for _, a := range list {
		addrs = append(addrs, netip.MustParseAddr(a))
	}
	return addrs, nil
}

func TestCheckURL(t *testing.T) {
	t.Parallel()
	dns := resolver{
		"vllm.internal":      {"10.0.0.5"},
		"metadata.internal":  {"169.254.169.254"},
		"mixed.example.com":  {"203.0.113.7", "127.0.0.1"},
		"rebind.example.com": {"203.0.113.8"},
		"v6.example.com":     {"2001:db8::5", "fe80::5"},
		"model.corp.example": {"169.254.3.3"},
	}
	tests := []struct {
		allow, url string
		rule       string
	}{
		{"", "http://127.0.0.1:8000", "loopback"},
		{"", "http://[::1]:8000/v1", "loopback"},
		{"", "http://[::ffff:127.0.0.1]/", "loopback"},
		{"", "http://[fe80::1%25eth0]:80/", "link-local"},
		{"", "http://169.254.169.254/latest/meta-data", "link-local"},
		{"", "http://0.0.0.0:8000", "unspecified"},
		{"", "http://[::]:8000", "unspecified"},
		{"", "http://localhost:8000", "loopback"},
		{"", "http://LOCALHOST.:8000", "loopback"},
		{"", "http://model.localhost:8000", "loopback"},
		{"", "http://127.1:8000", "numeric host"},
		{"", "http://2130706433/", "numeric host"},
		{"", "http://0x7f000001/", "numeric host"},
		{"", "http://0x7f.0.0.1/", "numeric host"},
		{"", "http://metadata.internal/", "link-local"},
		{"", "http://mixed.example.com/", "loopback"},
		{"", "http://v6.example.com/", "link-local"},
		{"", "http://vllm.internal:8000/v1", ""},
		{"", "https://rebind.example.com/", ""},
		{"", "http://not-yet-in-dns.example.com/", ""}, // the gateway judges it when it dials
		{"", "http://10.1.2.3:8000", ""},
		{upstreampolicy.Loopback, "http://127.0.0.1:8000", ""},
		{upstreampolicy.Loopback, "http://localhost:8000", ""},
		{upstreampolicy.Loopback, "http://[::1]:8000", ""},
		{upstreampolicy.Loopback, "http://mixed.example.com/", ""},
		{upstreampolicy.Loopback, "http://metadata.internal/", "link-local"},
		{"metadata.internal", "http://metadata.internal/", ""},
		{"METADATA.internal.", "http://metadata.INTERNAL/", ""},
		{"*.corp.example", "http://model.corp.example/", ""},
		{"*.corp.example", "http://corp.example.evil/", ""},
		{"*.corp.example", "http://169.254.3.3/", "link-local"}, // a name's exception is not its address's
		{"10.0.0.0/8, 169.254.3.0/24", "http://model.corp.example/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.allow+"/"+tt.url, func(t *testing.T) {
			p := upstreampolicy.MustParse(tt.allow)
			err := p.CheckURL(t.Context(), dns, tt.url)
			assertRule(t, err, tt.rule)
		})
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	good := []string{"", "127.0.0.0/8,::1", " 10.0.0.0/8 , fd00::/8\tvllm.internal *.corp.example", "169.254.169.254", "Model_Host.internal."}
	for _, l := range good {
		if _, err := upstreampolicy.Parse(l); err != nil {
			t.Errorf("Parse(%q): %v", l, err)
		}
	}
	bad := []string{"10.0.0.0/33", "300.1.1.1/8", "http://vllm", "vllm:8000", "*", "*.", "a..b", "127.1", "host/", "x.0x7f"}
	for _, l := range bad {
		if _, err := upstreampolicy.Parse(l); !errors.Is(err, upstreampolicy.ErrInvalid) {
			t.Errorf("Parse(%q) = %v, want ErrInvalid", l, err)
		}
	}
	// Every problem at once.
	_, err := upstreampolicy.Parse("10.0.0.0/33,http://x")
	if err == nil || !strings.Contains(err.Error(), "10.0.0.0/33") || !strings.Contains(err.Error(), "http://x") {
		t.Errorf("Parse: %v, want both entries named", err)
	}
}

// TestDialContext dials a real listener on loopback: the default policy
// refuses before connecting — by address and by a name that resolves to
// loopback when dialled (what DNS rebinding does to a name that passed
// CheckURL) — and the loopback allow list connects.
func TestDialContext(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	tests := []struct {
		allow, addr string
		refused     bool
	}{
		{"", ln.Addr().String(), true},
		{"", "localhost:" + port, true},
		{upstreampolicy.Loopback, ln.Addr().String(), false},
		{"localhost", "localhost:" + port, false},
		{"localhost", ln.Addr().String(), true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.allow, tt.addr), func(t *testing.T) {
			controlled := false
			d := &net.Dialer{Control: func(string, string, syscall.RawConn) error { controlled = true; return nil }}
			dial := upstreampolicy.MustParse(tt.allow).DialContext(d)
			c, err := dial(t.Context(), "tcp", tt.addr)
			if tt.refused {
				if !errors.Is(err, upstreampolicy.ErrRefused) {
					t.Fatalf("dial %s = %v, want refused", tt.addr, err)
				}
				if controlled {
					t.Error("the dialer's own Control ran for a refused address")
				}
				return
			}
			if err != nil {
				t.Fatalf("dial %s: %v", tt.addr, err)
			}
			_ = c.Close()
			if !controlled {
				t.Error("the dialer's own Control did not run")
			}
		})
	}
}

func ExamplePolicy_CheckIP() {
	p := upstreampolicy.MustParse("") // the default policy
	fmt.Println(p.CheckIP(netip.MustParseAddr("169.254.169.254")))
	fmt.Println(p.CheckIP(netip.MustParseAddr("10.0.0.5")))
	// Output:
	// 169.254.169.254 is a link-local address (169.254.0.0/16, fe80::/10): refused by the upstream policy (allow it with --upstream-allow)
	// <nil>
}
