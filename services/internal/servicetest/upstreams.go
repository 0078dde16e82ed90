package servicetest

import "github.com/infergate/infergate/services/internal/upstreampolicy"

// Upstreams is the upstream policy of the test stacks: their upstreams
// are real servers on loopback, which the default policy refuses. The
// default stays as it is; the tests allow loopback here, explicitly.
func Upstreams() *upstreampolicy.Policy {
	return upstreampolicy.MustParse(upstreampolicy.Loopback)
}
