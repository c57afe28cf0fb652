package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// KindAccess is the exchange of a user's JWT for an access token.
const KindAccess = "access_token"

// Exchanger runs the gateway's token exchanges (access tokens, connect
// tokens, MCP tokens): at most cap(Inflight) at once, callers queued behind
// giving up at their own deadline, through the token endpoint's breaker,
// traced and observed by the host.
type Exchanger struct {
	Inflight chan struct{}
	Breaker  *zapierapi.Breaker
	Client   *zapierapi.Client
	// Mint signs the identity's partner JWT (keys loaded on first use).
	Mint func(ctx context.Context, id Identity) (string, error)
	// Trace starts the exchange's span; the returned func ends it. May be nil.
	Trace func(ctx context.Context, id Identity, kind string) (context.Context, func(error))
	// Done is told of each exchange made (metrics, the failure log). May be nil.
	Done func(id Identity, kind string, err error, took time.Duration)
}

// Run runs one exchange of kind for id.
func (e *Exchanger) Run(ctx context.Context, id Identity, kind string, call func(context.Context) (zapierapi.Token, error)) (tok zapierapi.Token, err error) {
	if e.Trace != nil {
		var end func(error)
		ctx, end = e.Trace(ctx, id, kind)
		defer func() { end(err) }()
	}
	select {
	case e.Inflight <- struct{}{}:
		defer func() { <-e.Inflight }()
	case <-ctx.Done():
		return tok, &zapierapi.Error{Kind: zapierapi.KindTimeout, Err: ctx.Err()}
	}
	start := time.Now()
	err = Guard(e.Breaker, func() (err error) {
		tok, err = call(ctx)
		return err
	})
	if e.Done != nil {
		e.Done(id, kind, err, time.Since(start))
	}
	return tok, err
}

// Access mints id's JWT and trades it for an access token: the token
// cache's fetch function.
func (e *Exchanger) Access(ctx context.Context, id Identity) (tokencache.Token, error) {
	tok, err := e.Run(ctx, id, KindAccess, func(ctx context.Context) (zapierapi.Token, error) {
		jwt, err := e.Mint(ctx, id)
		if err != nil {
			return zapierapi.Token{}, fmt.Errorf("minting JWT: %w", err)
		}
		return e.Client.ExchangeJWT(ctx, jwt)
	})
	if err != nil {
		return tokencache.Token{}, err
	}
	return tokencache.Token{Value: tok.AccessToken, Expiry: tok.Expiry}, nil
}
