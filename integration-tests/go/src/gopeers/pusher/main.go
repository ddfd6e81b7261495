// Command pusher sends one push the way a go-pantheon Roma service sends it through
// fabrica-kit, for testing Janus's broadcaster API against a real grpc-go caller.
//
// Roma's player and room services push through broadcaster.service.push.v1.PushService on
// janus.gate.interface, over fabrica-kit's connection (router/conn with the reader balancer):
// kratos's etcd discovery lists the instances under /microservices/janus.gate.interface/; the
// node filter keeps those whose metadata.color equals the x-md-global-color of the call's
// outgoing context; the balancer takes the node whose address is the gateway route of
// (color, x-md-global-oid) in Redis (r_janus.gate.interface_{<color>}_{<oid>}), else one of the
// others; kratos's metadata middleware carries the worker context's x-md-global-* keys. This
// does the same, once, with grpc-go: etcd is read through its JSON gateway (package etcdgw says
// why) and Redis with one GET written in RESP by hand (Debian's Redis clients for Go are not
// among the packages the peers are built from, and one command does not need one).
//
// The bodies are those of Roma's Publisher: Push carries only uid and bodies (no colour, no
// sid), Multicast the colour, uids and bodies, Broadcast the colour, sid and bodies.
//
// Usage:
//
//	pusher -etcd http://host:port -redis host:port -color C -oid O -call push|multicast|broadcast
//	       [-uid U] [-uids U1,U2] [-sid S] [-mod M] [-seq Q] [-obj J] -data TEXT
//
// It prints one JSON line (nodes: the addresses the colour filter kept, route: the route found
// for (color, oid), node: the one called, pushed / pushed_uids: the answer) and exits 0, or
// says on stderr why the call failed and exits 1 (no node of the colour is such a failure, as
// it is for Roma).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"gopeers/etcdgw"
	"gopeers/wire"
)

// gateService is the name Roma's broadcaster connection discovers.
const gateService = "janus.gate.interface"

type result struct {
	Nodes      []string `json:"nodes"`
	Route      string   `json:"route"`
	Node       string   `json:"node"`
	Pushed     bool     `json:"pushed"`
	PushedUIDs []int64  `json:"pushed_uids"`
}

func main() {
	etcd := flag.String("etcd", "", "etcd client URL (http://host:port)")
	redis := flag.String("redis", "", "Redis host:port holding the gateway routes")
	color := flag.String("color", "", "the colour of the calling worker's context")
	oid := flag.Int64("oid", 0, "the object id of the calling worker's context (its uid for a player)")
	call := flag.String("call", "", "push, multicast or broadcast")
	uid := flag.Int64("uid", 0, "push: the player")
	uids := flag.String("uids", "", "multicast: the players, comma-separated")
	sid := flag.Int64("sid", 0, "broadcast: the server id")
	mod := flag.Int("mod", 0, "the body's mod")
	seq := flag.Int("seq", 0, "the body's seq")
	obj := flag.Int64("obj", 0, "the body's obj")
	data := flag.String("data", "", "the body's data")
	flag.Parse()
	if *etcd == "" || *redis == "" {
		fatal("-etcd and -redis are required")
	}

	var res result
	nodes, err := colorNodes(etcdgw.New(*etcd), *color)
	if err != nil {
		fatal("%v", err)
	}
	res.Nodes = nodes
	res.Route, err = redisGet(*redis, fmt.Sprintf("r_%s_{%s}_{%d}", gateService, *color, *oid))
	if err != nil {
		fatal("route of (%s, %d): %v", *color, *oid, err)
	}
	res.Node = nodes[0]
	for _, n := range nodes {
		if n == res.Route {
			res.Node = n
		}
	}

	conn, err := grpc.Dial(res.Node, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(wire.Codec{})))
	if err != nil {
		fatal("dial %s: %v", res.Node, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx,
		"x-md-global-color", *color,
		"x-md-global-oid", strconv.FormatInt(*oid, 10),
		"x-md-global-uid", strconv.FormatInt(*oid, 10))
	bodies := []wire.PushBody{{Data: []byte(*data), Obj: *obj, Mod: int32(*mod), Seq: int32(*seq)}}
	const method = "/broadcaster.service.push.v1.PushService/"
	switch *call {
	case "push":
		var resp wire.PushResponse
		err = conn.Invoke(ctx, method+"Push", &wire.PushRequest{Bodies: bodies, UID: *uid}, &resp)
		res.Pushed = resp.Pushed
	case "multicast":
		list, perr := parseList(*uids)
		if perr != nil {
			fatal("-uids: %v", perr)
		}
		var resp wire.MulticastResponse
		err = conn.Invoke(ctx, method+"Multicast", &wire.MulticastRequest{Bodies: bodies, UIDs: list, Color: *color}, &resp)
		res.PushedUIDs = resp.PushedUIDs
		sort.Slice(res.PushedUIDs, func(i, j int) bool { return res.PushedUIDs[i] < res.PushedUIDs[j] })
	case "broadcast":
		var resp wire.BroadcastResponse
		err = conn.Invoke(ctx, method+"Broadcast", &wire.BroadcastRequest{Bodies: bodies, Color: *color, Sid: *sid}, &resp)
	default:
		fatal("-call must be push, multicast or broadcast, not %q", *call)
	}
	if err != nil {
		fatal("%s on %s: %v", *call, res.Node, err)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

func fatal(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "pusher: "+format+"\n", args...)
	os.Exit(1)
}

// colorNodes lists the gate instances and keeps, as fabrica-kit's node filter does, those whose
// metadata.color is color; their gRPC addresses, sorted.
func colorNodes(etcd *etcdgw.Client, color string) ([]string, error) {
	instances, err := etcd.Instances(gateService)
	if err != nil {
		return nil, err
	}
	var nodes []string
	for _, i := range instances {
		if i.Metadata["color"] != color {
			continue
		}
		addr, err := i.GRPCAddress()
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, addr)
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("no %s node of color %q among %d instances", gateService, color, len(instances))
	}
	sort.Strings(nodes)
	return nodes, nil
}

func parseList(s string) ([]int64, error) {
	var list []int64
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, err
		}
		list = append(list, v)
	}
	return list, nil
}

// redisGet sends GET key to the Redis at addr in RESP; "" when the key does not exist.
func redisGet(addr, key string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", len(key), key); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return "", fmt.Errorf("GET answered %q", line)
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil {
		return "", fmt.Errorf("GET answered %q", line)
	}
	if n < 0 {
		return "", nil // $-1: no such key
	}
	value := make([]byte, n+2)
	if _, err := io.ReadFull(r, value); err != nil {
		return "", err
	}
	return string(value[:n]), nil
}
