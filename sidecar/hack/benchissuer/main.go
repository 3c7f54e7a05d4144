// Command benchissuer serves the sidecar's test issuer on loopback for the
// resource benchmark (hack/bench-sidecar.sh): it prints its token URL on
// stdout and serves until killed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kube-sts/kube-sts/sidecar/internal/issuertest"
)

func main() {
	lifetime := flag.Duration("lifetime", time.Minute, "lifetime of minted tokens")
	flag.Parse()
	iss := issuertest.New(*lifetime) // httptest listens on 127.0.0.1 only
	defer iss.Close()
	fmt.Println(iss.TokenURL())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	<-sigs
	fmt.Fprintf(os.Stderr, "benchissuer: %d exchanges served\n", iss.Count())
}
