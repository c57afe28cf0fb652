package caddymodule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/zapgate/caddy-zapier/triggers"
)

// webhooksCommand is `caddy zapier webhooks register|list|test|delete`:
// the partner's connection-webhook registrations at Zapier, with the
// dedicated credentials Zapier gives for them (a token in
// ZAPIER_WEBHOOKS_TOKEN, or client credentials in
// ZAPIER_WEBHOOKS_CLIENT_ID / ZAPIER_WEBHOOKS_CLIENT_SECRET). It talks to
// Zapier directly, not to a running Caddy.
func webhooksCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "webhooks register|list|test|delete",
		Short: "Manages the connection-webhook registrations at Zapier",
		Long: `Manages the partner's connection-webhook registrations at Zapier (early access).

Credentials: --token (or ZAPIER_WEBHOOKS_TOKEN), else the dedicated client
credentials in ZAPIER_WEBHOOKS_CLIENT_ID and ZAPIER_WEBHOOKS_CLIENT_SECRET,
exchanged at --token-url. register prints the whsec_ secret once: put it in
zapier_triggers' connection_webhook_secret.`,
	}
	pf := c.PersistentFlags()
	pf.String("api-url", "https://api.zapier.com", "Zapier's API")
	pf.String("token-url", "https://zapier.com/oauth/token", "Zapier's token endpoint (with client credentials)")
	pf.String("token", "", "Bearer token of the dedicated client (default $ZAPIER_WEBHOOKS_TOKEN)")

	register := &cobra.Command{Use: "register --callback-url <https URL>", Short: "Registers the gateway's connection-webhooks route",
		Args: cobra.NoArgs, RunE: caddycmd.WrapCommandFuncForCobra(cmdWebhooksRegister)}
	register.Flags().String("callback-url", "", "Public https URL of zapier_triggers' connection-webhooks route")
	list := &cobra.Command{Use: "list", Short: "Lists the registrations", Args: cobra.NoArgs,
		RunE: caddycmd.WrapCommandFuncForCobra(cmdWebhooksList)}
	test := &cobra.Command{Use: "test --id <id>", Short: "Asks Zapier for a test delivery", Args: cobra.NoArgs,
		RunE: caddycmd.WrapCommandFuncForCobra(cmdWebhooksTest)}
	test.Flags().String("id", "", "Registration id")
	del := &cobra.Command{Use: "delete --id <id>", Short: "Deletes a registration", Args: cobra.NoArgs,
		RunE: caddycmd.WrapCommandFuncForCobra(cmdWebhooksDelete)}
	del.Flags().String("id", "", "Registration id")
	c.AddCommand(register, list, test, del)
	return c
}

func webhooksClient(fl caddycmd.Flags) (*triggers.WebhooksClient, error) {
	return triggers.WebhooksCredentials{APIURL: fl.String("api-url"), TokenURL: fl.String("token-url"),
		Token: cmp.Or(fl.String("token"), os.Getenv("ZAPIER_WEBHOOKS_TOKEN")), ClientID: os.Getenv("ZAPIER_WEBHOOKS_CLIENT_ID"),
		ClientSecret: os.Getenv("ZAPIER_WEBHOOKS_CLIENT_SECRET")}.Client(context.Background())
}

func cmdWebhooksRegister(fl caddycmd.Flags) (int, error) {
	cb := fl.String("callback-url")
	if cb == "" {
		return caddy.ExitCodeFailedStartup, errors.New("give --callback-url")
	}
	c, err := webhooksClient(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	w, err := c.Register(context.Background(), cb)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Printf("Registered %s for %s → %s\n", w.ID, w.EventType, w.CallbackURL)
	fmt.Printf("Secret (shown once; put it in connection_webhook_secret): %s\n", w.Secret)
	return caddy.ExitCodeSuccess, nil
}

func cmdWebhooksList(fl caddycmd.Flags) (int, error) {
	c, err := webhooksClient(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	list, err := c.List(context.Background())
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if len(list) == 0 {
		fmt.Println("No registrations.")
	}
	for _, w := range list {
		state := "active"
		if !w.IsActive {
			state = "paused"
		}
		fmt.Printf("%s  %s  %s  %s\n", w.ID, w.EventType, state, w.CallbackURL)
	}
	return caddy.ExitCodeSuccess, nil
}

func cmdWebhooksTest(fl caddycmd.Flags) (int, error) {
	return webhooksByID(fl, func(c *triggers.WebhooksClient, id string) error { return c.Test(context.Background(), id) },
		"Zapier sends a test delivery (webhook-test: true).")
}

func cmdWebhooksDelete(fl caddycmd.Flags) (int, error) {
	return webhooksByID(fl, func(c *triggers.WebhooksClient, id string) error { return c.Delete(context.Background(), id) },
		"Deleted.")
}

func webhooksByID(fl caddycmd.Flags, op func(*triggers.WebhooksClient, string) error, done string) (int, error) {
	id := fl.String("id")
	if id == "" {
		return caddy.ExitCodeFailedStartup, errors.New("give --id")
	}
	c, err := webhooksClient(fl)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if err := op(c, id); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	fmt.Println(done)
	return caddy.ExitCodeSuccess, nil
}
