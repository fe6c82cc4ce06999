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

func (p *Plugin) prepare(args *skel.CmdArgs) (*NetConf, Caller, *slog.Logger, io.Closer, error) {
	conf, err := LoadNetConf(args.StdinData)
	if err != nil {
		return nil, nil, nil, nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	logger, closer := newLogger(conf, args)
	return conf, p.Dial(conf.SocketPath), logger, closer, nil
}

func request(args *skel.CmdArgs) *Request {
	return &Request{ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName, Args: args.Args, Config: args.StdinData}
}

// Add asks the agent for a port plugged into the pod's netns and prints the result in the
// configuration's cniVersion.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, agent, log, closer, err := p.prepare(args)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	data, err := agent.Call(ctx, PathAdd, request(args))
	if err != nil {
		log.Error("ADD failed", "error", err)
		return toCNIError(err, "ADD")
	}
	result, err := current.NewResult(data)
	if err != nil {
		log.Error("ADD: agent sent an invalid result", "error", err)
		return types.NewError(types.ErrInternal, "kuryr agent sent an invalid CNI result", err.Error())
	}
	log.Info("ADD done")
	return types.PrintResult(result, conf.CNIVersion)
}

// Del releases the pod's port. It succeeds when the agent is down: the interface is removed
// locally and the agent reconciles the port when it comes back.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, agent, log, closer, err := p.prepare(args)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	_, err = agent.Call(ctx, PathDel, request(args))
	if errors.Is(err, ErrAgentUnavailable) {
		log.Warn("DEL: agent unavailable, tearing down locally", "error", err)
		if args.Netns == "" || p.LocalTeardown == nil {
			return nil
		}
		if terr := p.LocalTeardown(ctx, args.Netns, args.IfName); terr != nil {
			log.Error("DEL: local teardown failed", "error", terr)
			return types.NewError(types.ErrInternal, "kuryr agent unavailable and local teardown failed", terr.Error())
		}
		return nil
	}
	if err != nil {
		log.Error("DEL failed", "error", err)
		return toCNIError(err, "DEL")
	}
	log.Info("DEL done")
	return nil
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

func (p *Plugin) forward(args *skel.CmdArgs, path, verb string) error {
	conf, agent, log, closer, err := p.prepare(args)
	if err != nil {
		return err
	}
	defer closer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout())
	defer cancel()
	if _, err := agent.Call(ctx, path, request(args)); err != nil {
		log.Error(verb+" failed", "error", err)
		return toCNIError(err, verb)
	}
	return nil
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
