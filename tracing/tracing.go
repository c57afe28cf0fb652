// Package tracing makes the gateway's spans: children of the request's
// span, from that span's provider (Caddy's tracing handler), never the
// global one; their attributes never hold a token, a JWT or a raw identity.
package tracing

import (
	"context"
	"net/http"
	"sync"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/zapgate/caddy-zapier/connect"
	"github.com/zapgate/caddy-zapier/metrics"
	"github.com/zapgate/caddy-zapier/tokencache"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// TracerName is the instrumentation scope of the gateway's spans.
const TracerName = "github.com/zapgate/caddy-zapier"

// Span names. Spans are children of the request's span, so they nest under
// Caddy's `tracing` handler; without it they are no-ops. Their attributes
// are outcomes, kinds and counts: never a token, a JWT or a raw identity
// (zapier.identity is the same short keyed hash the logs use).
const (
	SpanExchange        = "zapier.exchange"         // one token exchange, queueing and retries included
	SpanSignJWT         = "zapier.sign_jwt"         // minting the partner JWT
	SpanConnectComplete = "zapier.connect.complete" // a connect flow's completion (popup or redirect)
	SpanActionRun       = "zapier.action.run"       // one POST run of zapier_actions
)

// Attribute keys.
const (
	AttrOutcome      = attribute.Key("zapier.outcome")
	AttrExchangeKind = attribute.Key("zapier.exchange.kind")
	AttrIdentity     = attribute.Key("zapier.identity")
	AttrAttempts     = attribute.Key("zapier.attempts")
	AttrStatusCode   = attribute.Key("http.response.status_code")
	AttrSigningAlg   = attribute.Key("zapier.jwt.alg")
	AttrLookup       = attribute.Key("zapier.token_lookup")
	AttrConnectFlow  = attribute.Key("zapier.connect.flow")
)

// StartSpan starts a child of the span in ctx with that span's provider: the
// one Caddy's tracing handler uses, or a no-op when tracing is off. The
// global provider is never used, so nothing is exported by accident.
func StartSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(TracerName)
	return tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// FinishSpan records the outcome and ends the span. The error's text is not
// recorded: Zapier's descriptions may quote what it was sent.
func FinishSpan(span trace.Span, outcome string, err error) {
	span.SetAttributes(AttrOutcome.String(outcome))
	if err != nil {
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
}

// StartExchange starts the span of one exchange of the given kind
// (metrics.ExchangeKindAccess or metrics.ExchangeKindConnect); end it with EndExchange.
func StartExchange(ctx context.Context, kind string) (context.Context, trace.Span) {
	return StartSpan(ctx, SpanExchange, AttrExchangeKind.String(kind))
}

// EndExchange records the outcome (the same value as the metric label),
// the attempts and Zapier's status, and ends the span.
func EndExchange(span trace.Span, err error) {
	if zerr, ok := zapierapi.AsError(err); ok && span.IsRecording() {
		span.SetAttributes(AttrAttempts.Int(zerr.Attempts))
		if zerr.StatusCode != 0 {
			span.SetAttributes(AttrStatusCode.Int(zerr.StatusCode))
		}
	}
	FinishSpan(span, metrics.ExchangeOutcome(err), err)
}

// SignJWT runs mint (minting the partner JWT with alg) inside a span.
func SignJWT(ctx context.Context, alg string, mint func() (string, error)) (string, error) {
	_, span := StartSpan(ctx, SpanSignJWT, AttrSigningAlg.String(alg))
	jwt, err := mint()
	outcome := "success"
	if err != nil {
		outcome = "failed"
	}
	FinishSpan(span, outcome, err)
	return jwt, err
}

// StartConnect starts the span of a connect completion; end it with
// FinishSpan(span, string(outcome), err).
func StartConnect(ctx context.Context, flow connect.Flow) (context.Context, trace.Span) {
	return StartSpan(ctx, SpanConnectComplete, AttrConnectFlow.String(string(flow)))
}

// StartActionRun starts the span of an action run; end it with
// FinishSpan(span, string(outcome), err).
func StartActionRun(ctx context.Context) (context.Context, trace.Span) {
	return StartSpan(ctx, SpanActionRun)
}

// AnnotateLookup tells, on the request's span, how the token was obtained
// (hit, miss, coalesced, …). It costs nothing when tracing is off.
func AnnotateLookup(ctx context.Context, res tokencache.Result) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(AttrLookup.String(res.String()))
	}
}

// ZapierTransport sends every request the gateway itself makes to Zapier
// (token exchanges, API calls). It is shared by all config generations, so
// connections survive reloads. Each request gets a client span under the
// span in its context, from that span's provider, and carries the trace
// context (traceparent, plus whatever OTEL_PROPAGATORS selects, as Caddy's
// tracing handler does) so Zapier-side logs can be correlated.
var ZapierTransport = sync.OnceValue(func() http.RoundTripper {
	return otelhttp.NewTransport(zapierapi.NewTransport(), otelhttp.WithPropagators(autoprop.NewTextMapPropagator()))
})
