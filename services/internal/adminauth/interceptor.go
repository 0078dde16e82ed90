package adminauth

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
)

// projectRequest is every request message of the control plane.
type projectRequest interface {
	GetProject() string
}

// NewInterceptor checks the token's scope against the request's project
// before the handler runs, so a call on a project outside the scope learns
// nothing about it. It authenticates the call too, unless NewMiddleware
// already did before the body was read (as every control-plane server
// does); then it takes the middleware's principal.
func NewInterceptor(tokens *Tokens) connect.Interceptor {
	return &interceptor{tokens: tokens}
}

type interceptor struct {
	tokens *Tokens
}

// authorize takes the principal the middleware (NewMiddleware) found, or
// authenticates the header itself where no middleware runs in front.
func (i *interceptor) authorize(ctx context.Context, header interface{ Get(string) string }, msg any) (context.Context, error) {
	p, ok := FromContext(ctx)
	if !ok {
		var err error
		if p, err = i.tokens.authenticateHeader(header); err != nil {
			return nil, connect.NewError(connect.CodeUnauthenticated, err)
		}
	}
	if r, ok := msg.(projectRequest); ok && !p.Allows(r.GetProject()) {
		return nil, connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("%w: token %q may not use project %q", ErrPermissionDenied, p.Name, r.GetProject()))
	}
	return WithPrincipal(ctx, p), nil
}

func (i *interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx, err := i.authorize(ctx, req.Header(), req.Any())
		if err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

func (i *interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler refuses streams without a valid token. The control
// plane has no streaming RPCs today; a future one checks its project in
// the handler.
func (i *interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := i.authorize(ctx, conn.RequestHeader(), nil)
		if err != nil {
			return err
		}
		return next(ctx, conn)
	}
}

// NewClientInterceptor adds the bearer token to every outgoing call.
func NewClientInterceptor(token string) connect.Interceptor {
	return connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if req.Spec().IsClient {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	})
}
