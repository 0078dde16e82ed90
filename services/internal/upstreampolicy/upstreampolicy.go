// Package upstreampolicy decides which addresses a deployment's upstream
// may be at, so that a project-scoped admin cannot point the gateways (or
// the deployment service's status probe) at the hosts' own loopback
// services or the cloud metadata endpoint (SSRF).
//
// By default loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16 —
// the metadata endpoint 169.254.169.254 among them — and fe80::/10) and
// unspecified (0.0.0.0/8, ::) addresses are refused; everything else is
// allowed. An allow list (--upstream-allow, INFERGATE_UPSTREAM_ALLOW) of
// CIDRs, addresses and host names makes exceptions.
//
// It is checked twice: when an upstream URL is given (CheckURL: a host
// name is resolved then, and refused if any of its addresses is), and on
// every connection the gateway makes (DialContext: the address actually
// dialled, so a name that resolves elsewhere later — DNS rebinding — is
// still refused).
package upstreampolicy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Loopback is the allow list that lets upstreams be on this host: what
// `infergate dev` and the test stacks use.
const Loopback = "127.0.0.0/8,::1"

// ErrRefused is what every refusal wraps.
var ErrRefused = errors.New("refused by the upstream policy")

// ErrInvalid means an allow list entry is neither a CIDR, an address nor a
// host name.
var ErrInvalid = errors.New("upstreampolicy: invalid allow list entry")

// rule is one class of addresses refused unless allowed.
type rule struct {
	name     string
	prefixes []netip.Prefix
}

var rules = []rule{
	{"loopback", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}},
	{"link-local", []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fe80::/10")}},
	// 0.0.0.0 dials this host on Linux; the rest of 0/8 is "this network".
	{"unspecified", []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("::/128")}},
}

// nat64 is the well-known NAT64 prefix (RFC 6052): 64:ff9b::a.b.c.d
// reaches a.b.c.d through a NAT64 gateway, so it is judged as a.b.c.d.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Policy is a parsed allow list. A nil *Policy is the default policy (no
// exceptions).
type Policy struct {
	nets []netip.Prefix
	// hosts are allowed names, lower case, without a trailing dot;
	// suffixes are ".example.com" for an entry "*.example.com".
	hosts    []string
	suffixes []string
	entries  []string
}

// Parse reads an allow list: entries separated by commas or white space,
// each a CIDR (10.0.0.0/8, fd00::/8), an address (127.0.0.1, ::1), a host
// name (vllm.internal) or a wildcard name (*.internal: any name under it).
// An empty list is the default policy.
func Parse(list string) (*Policy, error) {
	p := &Policy{}
	var errs []error
	for _, e := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		if err := p.add(e); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// MustParse is Parse for lists known to be good; it panics on a bad one.
func MustParse(list string) *Policy {
	p, err := Parse(list)
	if err != nil {
		panic(err)
	}
	return p
}

func (p *Policy) add(e string) error {
	switch {
	case strings.Contains(e, "/"):
		pfx, err := netip.ParsePrefix(e)
		if err != nil {
			return fmt.Errorf("%w: %q: %w", ErrInvalid, e, err)
		}
		p.nets = append(p.nets, pfx.Masked())
	case isAddr(e):
		a, _ := netip.ParseAddr(e)
		a = a.Unmap().WithZone("")
		p.nets = append(p.nets, netip.PrefixFrom(a, a.BitLen()))
	default:
		name := canonicalName(e)
		rest, wild := strings.CutPrefix(name, "*.")
		if !hostName(rest) || numeric(rest) {
			return fmt.Errorf("%w: %q is not a CIDR, an address or a host name", ErrInvalid, e)
		}
		if wild {
			p.suffixes = append(p.suffixes, "."+rest)
		} else {
			p.hosts = append(p.hosts, rest)
		}
	}
	p.entries = append(p.entries, e)
	return nil
}

// String is the allow list, for logs; "" for none.
func (p *Policy) String() string {
	if p == nil {
		return ""
	}
	return strings.Join(p.entries, ",")
}

// AllowsName reports whether the host name itself is on the allow list
// (then its addresses are not checked).
func (p *Policy) AllowsName(host string) bool {
	if p == nil {
		return false
	}
	host = canonicalName(host)
	for _, h := range p.hosts {
		if host == h {
			return true
		}
	}
	for _, s := range p.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// RefusedError says which address was refused, by which rule.
type RefusedError struct {
	// Host is the name that resolved to Addr; "" when Addr was given as
	// such (or dialled).
	Host string
	Addr netip.Addr
	// Rule is "loopback", "link-local", "unspecified" or "numeric host".
	Rule string
}

func (e *RefusedError) Error() string {
	if e.Rule == ruleNumeric {
		return fmt.Sprintf("host %q is a numeric host but not a plain IP address: %s", e.Host, ErrRefused)
	}
	what := e.Addr.String() + " is"
	if e.Host != "" {
		what = fmt.Sprintf("host %q resolves to %s,", e.Host, e.Addr)
	}
	return fmt.Sprintf("%s a %s address (%s): %s (allow it with --upstream-allow)", what, e.Rule, ruleRanges(e.Rule), ErrRefused)
}

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Unwrap() error { return ErrRefused }

const ruleNumeric = "numeric host"

func ruleRanges(name string) string {
	for _, r := range rules {
		if r.name == name {
			s := make([]string, len(r.prefixes))
			for i, p := range r.prefixes {
				s[i] = p.String()
			}
			return strings.Join(s, ", ")
		}
	}
	return ""
}

// CheckIP returns a *RefusedError if the policy refuses ip, nil if it
// allows it.
func (p *Policy) CheckIP(ip netip.Addr) error {
	// Prefix.Contains is false for an address with a zone, and an IPv4
	// prefix never contains an IPv4-mapped IPv6 address: judge the plain
	// address.
	ip = ip.WithZone("").Unmap()
	if !ip.IsValid() {
		return &RefusedError{Addr: ip, Rule: "unspecified"}
	}
	if p.allowsIP(ip) {
		return nil
	}
	if name := refusedBy(ip); name != "" {
		return &RefusedError{Addr: ip, Rule: name}
	}
	if nat64.Contains(ip) {
		b := ip.As16()
		v4 := netip.AddrFrom4([4]byte(b[12:]))
		if !p.allowsIP(v4) {
			if name := refusedBy(v4); name != "" {
				return &RefusedError{Addr: ip, Rule: name}
			}
		}
	}
	return nil
}

func (p *Policy) allowsIP(ip netip.Addr) bool {
	if p == nil {
		return false
	}
	for _, n := range p.nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func refusedBy(ip netip.Addr) string {
	for _, r := range rules {
		for _, pfx := range r.prefixes {
			if pfx.Contains(ip) {
				return r.name
			}
		}
	}
	return ""
}

// Resolver looks host names up; *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ResolveTimeout bounds CheckURL's look-up.
const ResolveTimeout = 3 * time.Second

// CheckURL checks an upstream URL's host: an allowed name passes; an
// address is checked as CheckIP does; any other name is resolved with r
// (nil: net.DefaultResolver) and refused if any of its addresses is. A
// name that does not resolve here passes — the control plane may not see
// the regions' DNS — and is judged by the gateway when it dials. Names
// under localhost (RFC 6761) are loopback without a look-up, and a host
// that is a number but not a plain address (127.1, 0x7f000001,
// 2130706433: which some resolvers read as addresses) is refused.
func (p *Policy) CheckURL(ctx context.Context, r Resolver, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("upstreampolicy: %w", err)
	}
	host := u.Hostname()
	if isAddr(host) {
		a, _ := netip.ParseAddr(host)
		return p.CheckIP(a)
	}
	if p.AllowsName(host) {
		return nil
	}
	name := canonicalName(host)
	if numeric(name) {
		return &RefusedError{Host: host, Rule: ruleNumeric}
	}
	var addrs []netip.Addr
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	} else {
		if r == nil {
			r = net.DefaultResolver
		}
		ctx, cancel := context.WithTimeout(ctx, ResolveTimeout)
		defer cancel()
		if addrs, err = r.LookupNetIP(ctx, "ip", name); err != nil {
			return nil
		}
	}
	for _, a := range addrs {
		if err := p.CheckIP(a); err != nil {
			var re *RefusedError
			if errors.As(err, &re) {
				re.Host = host
			}
			return err
		}
	}
	return nil
}

// DialContext returns d's DialContext with the policy applied to every
// address it connects to: to an allowed host name as d would, to anything
// else through a copy of d whose ControlContext refuses, before
// connecting, an address the policy refuses. The error then wraps a
// *RefusedError (and ErrRefused).
func (p *Policy) DialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	checked := *d
	prevCtx, prev := d.ControlContext, d.Control
	checked.Control = nil
	checked.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		if err := p.checkAddress(address); err != nil {
			return err
		}
		switch {
		case prevCtx != nil:
			return prevCtx(ctx, network, address, c)
		case prev != nil:
			return prev(network, address, c)
		}
		return nil
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, _, err := net.SplitHostPort(addr); err == nil && !isAddr(host) && p.AllowsName(host) {
			return d.DialContext(ctx, network, addr)
		}
		return checked.DialContext(ctx, network, addr)
	}
}

// checkAddress checks the "ip:port" a dialer is about to connect to.
func (p *Policy) checkAddress(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// Not an IP socket (a Unix socket has no address to judge): the
		// gateway never dials one, so refuse rather than guess.
		return fmt.Errorf("upstreampolicy: %q is not an IP address and port: %w", address, ErrRefused)
	}
	return p.CheckIP(ap.Addr())
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// canonicalName is a host name in lower case without a trailing dot.
func canonicalName(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// hostName reports whether s is made of DNS labels of letters, digits,
// '-' and '_'.
func hostName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// numeric reports whether a name that is not a plain address still reads
// as a number: its last label is all digits or hex with 0x (no top-level
// domain is), as in 127.1, 0x7f.1 or 2130706433.
func numeric(name string) bool {
	last := name[strings.LastIndexByte(name, '.')+1:]
	if last == "" {
		return false
	}
	if h, ok := strings.CutPrefix(last, "0x"); ok {
		last = h
		for i := 0; i < len(last); i++ {
			if c := last[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(last); i++ {
		if c := last[i]; c < '0' || c > '9' {
			return false
		}
	}
	return true
}
