package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
)

// awsCredentials is `testapp aws`: an application using the AWS SDK for Go
// v2 as users write it, with nothing but the default configuration chain.
// Inside a Pod labeled for an injector whose token and value variables are
// AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, the chain picks the web
// identity provider: it reads the token file and calls
// AssumeRoleWithWebIdentity, again each time the credentials expire.
// Every interval it prints the credentials' key id and expiry, or the error.
func awsCredentials(args []string) error {
	interval := 2 * time.Second
	if len(args) > 0 {
		d, err := time.ParseDuration(args[0])
		if err != nil {
			return err
		}
		interval = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		creds, err := cfg.Credentials.Retrieve(ctx)
		now := time.Now().UTC().Format(time.RFC3339)
		if err != nil {
			fmt.Printf("%s aws credentials: error: %v\n", now, err)
		} else {
			fmt.Printf("%s aws credentials: key %s source %s expires %s\n", now, creds.AccessKeyID, creds.Source, creds.Expires.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
