// Command testapp stands in for the reference Pod's application container:
// every second it prints the file Vault's agent renders (or that it is not
// there yet), like the write-up's `cat /etc/secrets/myenv` loop. As
// `testapp consume ...` it is the soak's application (consume.go); as
// `testapp aws` an AWS SDK user (aws.go); `testapp true` exits at once (the
// soak's postStart exec hook that waits for nothing), saying "hook ran" in
// its container's log as kube-sts's await hook says "token awaited".
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "true" {
		hookRan()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "aws" {
		if err := awsCredentials(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "aws:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "consume" {
		if err := consume(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "consume:", err)
			os.Exit(1)
		}
		return
	}
	file := "/etc/secrets/myenv"
	if len(os.Args) > 1 {
		file = os.Args[1]
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Printf("%s waiting for %s: %v\n", time.Now().UTC().Format(time.RFC3339), file, err)
		} else {
			fmt.Printf("%s %s\n----------\n", time.Now().UTC().Format(time.RFC3339), data)
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// hookRan writes "hook ran" to the log of the container it runs in when the
// container's first process is this binary (the soak's sleeper): a
// postStart hook's own output is dropped by the kubelet.
func hookRan() {
	first, err1 := os.Stat("/proc/1/exe")
	self, err2 := os.Stat("/proc/self/exe")
	if err1 != nil || err2 != nil || !os.SameFile(first, self) {
		return
	}
	if f, err := os.OpenFile("/proc/1/fd/1", os.O_WRONLY|os.O_APPEND, 0); err == nil {
		fmt.Fprintf(f, "%s hook ran\n", time.Now().UTC().Format(time.RFC3339Nano))
		f.Close()
	}
}
