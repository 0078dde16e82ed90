module github.com/infergate/infergate/services/infergate

go 1.26

require (
	github.com/infergate/infergate/gen v0.0.0
	github.com/infergate/infergate/services/audit v0.0.0
	github.com/infergate/infergate/services/deployments v0.0.0
	github.com/infergate/infergate/services/gateway v0.0.0
	github.com/infergate/infergate/services/internal v0.0.0
	github.com/infergate/infergate/services/keys v0.0.0
)

replace github.com/infergate/infergate/gen => ../../gen

replace github.com/infergate/infergate/services/internal => ../internal

replace github.com/infergate/infergate/services/keys => ../keys

replace github.com/infergate/infergate/services/deployments => ../deployments

replace github.com/infergate/infergate/services/gateway => ../gateway

replace github.com/infergate/infergate/services/audit => ../audit
