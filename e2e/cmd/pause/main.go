// Command pause is the sandbox ("pause") image's process: it waits for a
// signal and exits, and reaps nothing because nothing else runs in it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
