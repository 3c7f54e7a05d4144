// Package probe reads the sidecar's token files as its probe and its
// postStart hook do: Probe and All (the readiness probe, and the check when
// the loop stops) say whether each holds a JWT valid for a margin, with the
// refresh loop's last failure from the status file; Await waits for them.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/kube-sts/kube-sts/shared/contract"
	"github.com/kube-sts/kube-sts/sidecar/internal/jwtinfo"
	"github.com/kube-sts/kube-sts/sidecar/internal/status"
)

// Probe succeeds when path holds a JWT that is still valid for at least
// margin. Its error ends with the refresh loop's last failure, when the
// sidecar recorded one (contract.StatusPath): the kubelet puts a failed
// probe's output into the Pod's events.
func Probe(path string, now time.Time, margin time.Duration) error {
	err := probe(path, now, margin)
	if err == nil {
		return nil
	}
	if s, ok := status.Read(contract.StatusPath(path)); ok {
		return fmt.Errorf("%w; %s", err, s.Text)
	}
	return err
}

func probe(path string, now time.Time, margin time.Duration) error {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no token at %s", path)
		}
		return err
	}
	c, err := jwtinfo.Parse(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("%s does not hold a JWT: %w", path, err)
	}
	if left := c.Expiry.Sub(now); left < margin {
		return fmt.Errorf("token at %s expires at %s, within %v", path, c.Expiry.UTC().Format(time.RFC3339), margin)
	}
	return nil
}

// staleStatus: see Await.
const staleStatus = 5 * time.Second

// refusedSince says whether the status file at path records a refusal and
// was written after t.
func refusedSince(path string, t time.Time) bool {
	s, ok := status.Read(path)
	return ok && s.Refused && s.Written.After(t)
}

// All runs Probe on every path (a Pod's first injector's token and its
// further ones) and reports every failure.
func All(paths []string, now time.Time, margin time.Duration) error {
	var errs []error
	for _, p := range paths {
		if err := Probe(p, now, margin); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// awaitPoll is how often Await looks at the files: a Pod's start waits for
// it, and a stat of a tmpfs file costs nothing.
const awaitPoll = 20 * time.Millisecond

// Await returns once All passes for paths, or its error after timeout,
// or at once when the issuer has refused a missing token's exchange. As the
// native sidecar's postStart hook it holds back the next init container
// (Vault's agent) until every token is on disk, without a probe period. No
// probe runs while a postStart hook does, so its failure is what tells the
// kubelet to restart the sidecar, whose termination message then says why
// the Pod stays in Init: a refusal is a decision (a rule, an audience) and
// is reported at once, like the classic init container's failure. Network
// errors and 5xx are waited out until timeout. A refusal recorded more than
// staleStatus before await started is an earlier container's (the kubelet's
// restart back-off is at least 10 s) and is ignored.
func Await(ctx context.Context, paths []string, margin, timeout time.Duration) error {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(awaitPoll)
	defer tick.Stop()
	for {
		// All's loop, noting a refusal of a missing token on the way:
		// each file is read once per poll.
		var errs []error
		refused, now := false, time.Now()
		for _, p := range paths {
			if err := Probe(p, now, margin); err != nil {
				errs = append(errs, err)
				refused = refused || refusedSince(contract.StatusPath(p), started.Add(-staleStatus))
			}
		}
		err := errors.Join(errs...)
		if err == nil {
			return nil
		}
		if refused {
			return fmt.Errorf("no valid token, and the issuer refused: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no valid token after %v: %w", timeout, err)
		case <-tick.C:
		}
	}
}
