package caddymodule

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

// tracerName is the instrumentation scope of the gateway's spans.
const tracerName = "github.com/zapgate/caddy-zapier"

// Span names. Spans are children of the request's span, so they nest under
// Caddy's `tracing` handler; without it they are no-ops. Their attributes
// are outcomes, kinds and counts: never a token, a JWT or a raw identity
// (zapier.identity is the same short keyed hash the logs use).
const (
	spanExchange        = "zapier.exchange"         // one token exchange, queueing and retries included
	spanSignJWT         = "zapier.sign_jwt"         // minting the partner JWT
	spanConnectComplete = "zapier.connect.complete" // a connect flow's completion (popup or redirect)
	spanActionRun       = "zapier.action.run"       // one POST run of zapier_actions
)

// Attribute keys.
const (
	attrOutcome      = attribute.Key("zapier.outcome")
	attrExchangeKind = attribute.Key("zapier.exchange.kind")
	attrIdentity     = attribute.Key("zapier.identity")
	attrAttempts     = attribute.Key("zapier.attempts")
	attrStatusCode   = attribute.Key("http.response.status_code")
	attrSigningAlg   = attribute.Key("zapier.jwt.alg")
	attrLookup       = attribute.Key("zapier.token_lookup")
	attrConnectFlow  = attribute.Key("zapier.connect.flow")
)

// startSpan starts a child of the span in ctx with that span's provider: the
// one Caddy's tracing handler uses, or a no-op when tracing is off. The
// global provider is never used, so nothing is exported by accident.
func startSpan(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName)
	return tracer.Start(ctx, name, trace.WithAttributes(attrs...))
}

// finishSpan records the outcome and ends the span. The error's text is not
// recorded: Zapier's descriptions may quote what it was sent.
func finishSpan(span trace.Span, outcome string, err error) {
	span.SetAttributes(attrOutcome.String(outcome))
	if err != nil {
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
}

// startExchangeSpan starts the span of one exchange of the given kind
// (metrics.ExchangeKindAccess or metrics.ExchangeKindConnect); end it with endExchangeSpan.
func startExchangeSpan(ctx context.Context, kind string) (context.Context, trace.Span) {
	return startSpan(ctx, spanExchange, attrExchangeKind.String(kind))
}

// endExchangeSpan records the outcome (the same value as the metric label),
// the attempts and Zapier's status, and ends the span.
func endExchangeSpan(span trace.Span, err error) {
	if zerr, ok := zapierapi.AsError(err); ok && span.IsRecording() {
		span.SetAttributes(attrAttempts.Int(zerr.Attempts))
		if zerr.StatusCode != 0 {
			span.SetAttributes(attrStatusCode.Int(zerr.StatusCode))
		}
	}
	finishSpan(span, metrics.ExchangeOutcome(err), err)
}

// signJWT mints the partner JWT for key inside a span.
func (a *App) signJWT(ctx context.Context, key tokencache.Key) (string, error) {
	_, span := startSpan(ctx, spanSignJWT, attrSigningAlg.String(a.SigningAlg))
	jwt, err := a.keys.Mint(key.Tenant, key.User)
	outcome := "success"
	if err != nil {
		outcome = "failed"
	}
	finishSpan(span, outcome, err)
	return jwt, err
}

// startConnectSpan starts the span of a connect completion; end it with
// finishSpan(span, string(outcome), err).
func startConnectSpan(ctx context.Context, flow connect.Flow) (context.Context, trace.Span) {
	return startSpan(ctx, spanConnectComplete, attrConnectFlow.String(string(flow)))
}

// startActionRunSpan starts the span of an action run; end it with
// finishSpan(span, string(outcome), err).
func startActionRunSpan(ctx context.Context) (context.Context, trace.Span) {
	return startSpan(ctx, spanActionRun)
}

// annotateLookup tells, on the request's span, how the token was obtained
// (hit, miss, coalesced, …). It costs nothing when tracing is off.
func annotateLookup(ctx context.Context, res tokencache.Result) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attrLookup.String(res.String()))
	}
}

// zapierTransport sends every request the gateway itself makes to Zapier
// (token exchanges, API calls). It is shared by all config generations, so
// connections survive reloads. Each request gets a client span under the
// span in its context, from that span's provider, and carries the trace
// context (traceparent, plus whatever OTEL_PROPAGATORS selects, as Caddy's
// tracing handler does) so Zapier-side logs can be correlated.
var zapierTransport = sync.OnceValue(func() http.RoundTripper {
	return otelhttp.NewTransport(zapierapi.NewTransport(), otelhttp.WithPropagators(autoprop.NewTextMapPropagator()))
})
