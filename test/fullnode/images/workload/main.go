// workload is the container image of the full-node tests' pods: it listens on TCP (-listen,
// default :8080) and answers every connection with its hostname (the pod's name) and a newline,
// so that a test can tell which pod it reached.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	addr := flag.String("listen", ":8080", "TCP address to answer on")
	flag.Parse()
	host, err := os.Hostname()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s listening on %s\n", host, l.Addr())
	go func() {
		// PID 1 of a PID namespace gets no default signal action: exit on SIGTERM ourselves.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		os.Exit(0)
	}()
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			continue
		}
		fmt.Fprintln(c, host)
		c.Close()
	}
}
