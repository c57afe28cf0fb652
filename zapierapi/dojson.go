package zapierapi

import "context"

// DoJSON calls a Zapier JSON API with a user's bearer token, for the
// packages beside this one that own an API area (triggers: the Trigger
// Inbox). It is doJSON: the client's transport (and so the request budget),
// bounded retries of idempotent methods, and *Error failures with secrets
// redacted.
func (c *Client) DoJSON(ctx context.Context, op, method, rawURL, bearer string, in, out any) error {
	return c.doJSON(ctx, op, method, rawURL, bearer, in, out)
}
