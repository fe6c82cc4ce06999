package cni

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawAgent answers every connection with answer, byte for byte, after reading the request head.
func rawAgent(t *testing.T, answer string, hold time.Duration) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cni.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				time.Sleep(hold)
				_, _ = io.WriteString(c, answer)
			}()
		}
	}()
	return sock
}

func TestClientProtocolEdges(t *testing.T) {
	ok := `{"cniVersion":"1.1.0"}`
	tests := []struct {
		name    string
		answer  string
		want    string // body, when no error
		wantErr string
	}{
		{"content-length", "HTTP/1.0 200 OK\r\nContent-Length: 22\r\n\r\n" + ok, ok, ""},
		{"body to the end of the connection", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + ok, ok, ""},
		{"bytes past content-length ignored", "HTTP/1.0 200 OK\r\nContent-Length: 22\r\n\r\n" + ok + "junk", ok, ""},
		{"short body", "HTTP/1.0 200 OK\r\nContent-Length: 50\r\n\r\n" + ok, "", "22 of 50 bytes"},
		{"chunked refused", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n16\r\n" + ok + "\r\n0\r\n\r\n", "", "unexpected Transfer-Encoding"},
		{"garbage status", "SSH-2.0-OpenSSH\r\n\r\n", "", "malformed status line"},
		{"closed without answer", "", "", "read answer"},
		{"bad content-length", "HTTP/1.0 200 OK\r\nContent-Length: -3\r\n\r\n", "", "bad Content-Length"},
		{"oversized content-length", "HTTP/1.0 200 OK\r\nContent-Length: 9999999999\r\n\r\n", "", "more than the"},
		{"oversized body", "HTTP/1.0 200 OK\r\n\r\n" + strings.Repeat("x", maxResponseBytes+1), "", "more than the"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := NewClient(rawAgent(t, tt.answer, 0)).Call(context.Background(), PathAdd, &Request{Config: json.RawMessage(`{}`)})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || string(body) != tt.want {
				t.Fatalf("Call = %q, %v; want %q", body, err, tt.want)
			}
		})
	}
}

func TestClientHonoursContext(t *testing.T) {
	sock := rawAgent(t, "HTTP/1.0 200 OK\r\n\r\n{}", time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := NewClient(sock).Call(ctx, PathAdd, &Request{Config: json.RawMessage(`{}`)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Call returned after %s, long past its context", d)
	}

	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := NewClient(sock).Call(ctx, PathAdd, &Request{Config: json.RawMessage(`{}`)}); !errors.Is(err, context.Canceled) {
		t.Errorf("error %v, want the context's cancellation", err)
	}
}

// TestClientAgainstNetHTTP: the agent is a net/http server; an answer bigger than its chunking
// buffer must still arrive whole (an HTTP/1.1 client would get it chunked).
func TestClientAgainstNetHTTP(t *testing.T) {
	big := `{"cniVersion":"1.1.0","dns":{"search":["` + strings.Repeat("a", 100000) + `"]}}`
	var method, proto, ctype string
	sock := fakeAgent(t, func(w http.ResponseWriter, r *http.Request) {
		method, proto, ctype = r.Method, r.Proto, r.Header.Get("Content-Type")
		for i := 0; i < len(big); i += 1000 { // many writes: no Content-Length known up front
			io.WriteString(w, big[i:min(i+1000, len(big))])
		}
	})
	body, err := NewClient(sock).Call(context.Background(), PathAdd, &Request{Config: json.RawMessage(`{}`)})
	if err != nil || string(body) != big {
		t.Fatalf("Call: %d bytes, %v; want %d bytes", len(body), err, len(big))
	}
	if method != "POST" || proto != "HTTP/1.0" || ctype != "application/json" {
		t.Errorf("the agent saw %s %s %q", method, proto, ctype)
	}
	if _, err := NewClient(sock).Call(context.Background(), PathStatus, nil); err != nil {
		t.Errorf("GET: %v", err)
	}
	if method != "GET" {
		t.Errorf("a call without request was %s, want GET", method)
	}
}
