package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Event is what the consumer reports to the soak's collector: a change of
// state (or of token), or its running counts.
type Event struct {
	Pod     string `json:"pod"`
	At      int64  `json:"at_ms"`
	Kind    string `json:"kind"`            // state | count
	State   string `json:"state,omitempty"` // valid | stale | absent | invalid | nokeys
	Detail  string `json:"detail,omitempty"`
	JTI     string `json:"jti,omitempty"`
	Exp     int64  `json:"exp,omitempty"`
	Reads   int    `json:"reads,omitempty"`
	Bad     int    `json:"bad,omitempty"` // partial, empty-but-present or unverifiable reads
	Absent  int    `json:"absent,omitempty"`
	Expired int    `json:"expired,omitempty"`
	NoKeys  int    `json:"nokeys,omitempty"` // reads that could not be verified: the JWKS could not be fetched
}

type consumer struct {
	file, jwksURL, report, pod string
	removeAfterRead            bool
	http                       *http.Client
	keys                       jose.JSONWebKeySet
	fetched                    time.Time
	fetchFailed                bool // the last JWKS fetch failed: an unknown kid is then not the file's fault
}

// consume is the soak's application: every interval it reads the token file
// as an application would, verifies it against the issuer's JWKS (signature
// and exp), and reports state changes and counts. With --remove-after-read it
// deletes the file after each read (Vault agent's remove_jwt_after_reading);
// with --fill-at it fills the file's folder up for --fill-for (/tokens full).
func consume(args []string) error {
	fl := flag.NewFlagSet("consume", flag.ContinueOnError)
	c := &consumer{}
	fl.StringVar(&c.file, "file", "/tokens/token.jwt", "token file")
	fl.StringVar(&c.jwksURL, "jwks", "", "the issuer's JWKS URL")
	fl.StringVar(&c.report, "report", "", "collector URL")
	fl.BoolVar(&c.removeAfterRead, "remove-after-read", false, "delete the file after each read")
	interval := fl.Duration("interval", 100*time.Millisecond, "read interval")
	fillAt := fl.Duration("fill-at", 0, "fill the token folder this long after start (0: never)")
	fillFor := fl.Duration("fill-for", 30*time.Second, "how long the folder stays full")
	if err := fl.Parse(args); err != nil {
		return err
	}
	c.pod = os.Getenv("POD_NAME")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(os.Getenv("CA_PEM"))) {
		return errors.New("CA_PEM holds no certificate")
	}
	c.http = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}

	start := time.Now()
	filler := filepath.Join(filepath.Dir(c.file), "filler")
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	second := time.NewTicker(time.Second)
	defer second.Stop()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var last Event
	var reads, bad, absent, expired, nokeys int
	for {
		select {
		case <-stop:
			c.send(Event{Kind: "count", Reads: reads, Bad: bad, Absent: absent, Expired: expired, NoKeys: nokeys})
			return nil
		case <-second.C:
			c.send(Event{Kind: "count", Reads: reads, Bad: bad, Absent: absent, Expired: expired, NoKeys: nokeys})
			if *fillAt > 0 {
				switch since := time.Since(start); {
				case since >= *fillAt && since < *fillAt+*fillFor:
					if _, err := os.Stat(filler); errors.Is(err, fs.ErrNotExist) {
						c.send(Event{Kind: "fill", Detail: fill(filler)})
					}
				case since >= *fillAt+*fillFor:
					if os.Remove(filler) == nil {
						c.send(Event{Kind: "fill", Detail: "freed"})
					}
				}
			}
			continue
		case <-tick.C:
		}
		e := c.check()
		reads++
		switch e.State {
		case "absent":
			absent++
		case "nokeys":
			nokeys++
		case "invalid":
			if e.Detail == "expired" {
				expired++
			} else {
				bad++
			}
		}
		if e.State != last.State || e.JTI != last.JTI {
			c.send(e)
			last = e
		}
	}
}

// check reads and verifies the file once.
func (c *consumer) check() Event {
	data, err := os.ReadFile(c.file)
	if errors.Is(err, fs.ErrNotExist) {
		return Event{Kind: "state", State: "absent"}
	}
	if err != nil {
		return Event{Kind: "state", State: "invalid", Detail: "read: " + err.Error()}
	}
	if c.removeAfterRead {
		_ = os.Remove(c.file)
	}
	claims, err := c.verify(strings.TrimSpace(string(data)))
	if errors.Is(err, errNoKeys) {
		return Event{Kind: "state", State: "nokeys", Detail: err.Error()}
	}
	if err != nil {
		return Event{Kind: "state", State: "invalid", Detail: err.Error()}
	}
	now := time.Now().Unix()
	if claims.Exp <= now {
		return Event{Kind: "state", State: "invalid", Detail: "expired", JTI: claims.JTI, Exp: claims.Exp}
	}
	// Stale: past the sidecar's refresh point (80% of the life, 5% jitter)
	// and some slack; the sidecar is retrying or late.
	state := "valid"
	if life := claims.Exp - claims.Iat; now > claims.Iat+life*85/100+5 {
		state = "stale"
	}
	return Event{Kind: "state", State: state, JTI: claims.JTI, Exp: claims.Exp}
}

type claims struct {
	JTI string `json:"jti"`
	Exp int64  `json:"exp"`
	Iat int64  `json:"iat"`
}

func (c *consumer) verify(token string) (claims, error) {
	var cl claims
	jws, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.ES384, jose.PS256, jose.EdDSA})
	if err != nil {
		return cl, fmt.Errorf("not a JWS (%d bytes)", len(token))
	}
	kid := jws.Signatures[0].Header.KeyID
	keys := c.keys.Key(kid)
	if len(keys) == 0 && time.Since(c.fetched) > time.Second {
		c.fetchKeys()
		keys = c.keys.Key(kid)
	}
	if len(keys) == 0 && c.fetchFailed {
		return cl, fmt.Errorf("%w (kid %s)", errNoKeys, kid)
	}
	if len(keys) == 0 {
		return cl, fmt.Errorf("unknown kid %s: signed by a key the issuer does not publish", kid)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		return cl, errors.New("bad signature")
	}
	if err := json.Unmarshal(payload, &cl); err != nil {
		return cl, errors.New("claims are not JSON")
	}
	return cl, nil
}

// errNoKeys: the JWKS could not be fetched (the issuer is down), so the token
// could not be checked; it says nothing about the file.
var errNoKeys = errors.New("the JWKS could not be fetched")

func (c *consumer) fetchKeys() {
	c.fetched, c.fetchFailed = time.Now(), true
	resp, err := c.http.Get(c.jwksURL)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&set) == nil {
		c.keys, c.fetchFailed = set, false
	}
}

func (c *consumer) send(e Event) {
	if c.report == "" {
		return
	}
	e.Pod, e.At = c.pod, time.Now().UnixMilli()
	body, _ := json.Marshal(e)
	resp, err := c.http.Post(c.report, "application/json", bytes.NewReader(body))
	if err == nil {
		resp.Body.Close()
	}
}

// fill writes zeros into path until the volume is full, or 16 MiB: a
// memory-backed emptyDir without a size limit would take the node's memory.
func fill(path string) string {
	f, err := os.Create(path)
	if err != nil {
		return "create: " + err.Error()
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	n := 0
	for {
		w, err := f.Write(buf)
		n += w
		if err != nil {
			return fmt.Sprintf("full after %d bytes (%v)", n, err)
		}
		if n >= 16<<20 {
			return "not full after 16 MiB: the volume has no size limit"
		}
	}
}
