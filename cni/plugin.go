package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Caller is the agent as the plugin sees it; *Client implements it.
type Caller interface {
	Call(ctx context.Context, path string, req *Request) ([]byte, error)
}

// Plugin implements the CNI commands by forwarding them to the agent.
type Plugin struct {
	// Dial returns a Caller of the agent at the socket path from the configuration.
	Dial func(socketPath string) Caller
	// LocalTeardown removes ifName from the netns when the agent cannot be reached on DEL,
	// so that a pod can always be deleted; the agent reconciles the port later.
	LocalTeardown func(ctx context.Context, netnsPath, ifName string) error
}

// Funcs returns the skel callbacks.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, Status: p.Status, GC: p.GC}
}

// outcome is what one call to the agent gave, for the command that made it.
type outcome struct {
	ctx  context.Context
	conf *NetConf
	log  *slog.Logger
	data []byte
	err  error
}

// call runs one command against the agent: parse the configuration, open the log, call path within
// the configuration's deadline, and hand the outcome to then.
func (p *Plugin) call(args *skel.CmdArgs, path string, then func(o outcome) error) error {
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	log, closer := newLogger(conf, args)
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	req := &Request{ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName, Args: args.Args, Config: args.StdinData}
	data, err := p.Dial(conf.SocketPath).Call(ctx, path, req)
	return then(outcome{ctx: ctx, conf: conf, log: log, data: data, err: err})
}

// Add asks the agent for a port plugged into the pod's netns and prints the result in the
// configuration's cniVersion.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	return p.call(args, PathAdd, func(o outcome) error {
		if o.err != nil {
			o.log.Error("ADD failed", "error", o.err)
			return toCNIError(o.err, "ADD")
		}
		result, err := current.NewResult(o.data)
		if err != nil {
			o.log.Error("ADD: agent sent an invalid result", "error", err)
			return types.NewError(types.ErrInternal, "kuryr agent sent an invalid CNI result", err.Error())
		}
		o.log.Info("ADD done")
		return types.PrintResult(result, o.conf.CNIVersion)
	})
}

// Del releases the pod's port. It succeeds when the agent is down: the interface is removed
// locally and the agent reconciles the port when it comes back.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	return p.call(args, PathDel, func(o outcome) error {
		if errors.Is(o.err, ErrAgentUnavailable) {
			o.log.Warn("DEL: agent unavailable, tearing down locally", "error", o.err)
			if args.Netns == "" || p.LocalTeardown == nil {
				return nil
			}
			if terr := p.LocalTeardown(o.ctx, args.Netns, args.IfName); terr != nil {
				o.log.Error("DEL: local teardown failed", "error", terr)
				return types.NewError(types.ErrInternal, "kuryr agent unavailable and local teardown failed", terr.Error())
			}
			return nil
		}
		if o.err != nil {
			o.log.Error("DEL failed", "error", o.err)
			return toCNIError(o.err, "DEL")
		}
		o.log.Info("DEL done")
		return nil
	})
}

// Check asks the agent to verify the attachment (link, MAC, addresses, routes).
func (p *Plugin) Check(args *skel.CmdArgs) error {
	return p.forward(args, PathCheck, "CHECK")
}

// GC asks the agent to release every attachment of this network not in cni.dev/valid-attachments.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	return p.forward(args, PathGC, "GC")
}

// Status reports whether the agent is ready to serve ADD (code 50 when it is not).
func (p *Plugin) Status(args *skel.CmdArgs) error {
	return p.forward(args, PathStatus, "STATUS")
}

// forward runs a command whose answer carries nothing but success or an error.
func (p *Plugin) forward(args *skel.CmdArgs, path, verb string) error {
	return p.call(args, path, func(o outcome) error {
		if o.err != nil {
			o.log.Error(verb+" failed", "error", o.err)
			return toCNIError(o.err, verb)
		}
		return nil
	})
}

// toCNIError keeps the agent's CNI error and code; an unreachable agent is "plugin not available".
func toCNIError(err error, verb string) error {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return cniErr
	}
	if errors.Is(err, ErrAgentUnavailable) {
		return types.NewError(types.ErrPluginNotAvailable, "kuryr agent is not available", err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return types.NewError(types.ErrTryAgainLater, verb+" timed out waiting for the kuryr agent", err.Error())
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("%s failed", verb), err.Error())
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// newLogger writes to conf.LogFile, or stderr; never stdout. Every line names the container.
func newLogger(conf *NetConf, args *skel.CmdArgs) (*slog.Logger, io.Closer) {
	var w io.Writer = os.Stderr
	var closer io.Closer = nopCloser{}
	if conf.LogFile != "" {
		if f, err := os.OpenFile(conf.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
			w, closer = f, f
		}
	}
	level := slog.LevelInfo
	if conf.LogLevel == "debug" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With(
		"plugin", "kuryr-cni", "containerID", args.ContainerID, "ifname", args.IfName, "netns", args.Netns), closer
}
