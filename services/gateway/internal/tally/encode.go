package tally

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/internal/usage"
)

// A flush message is encoded by hand, straight from the pending rows into
// the message's buffer: filling usagev1 messages and marshaling them was
// most of freeze's time. The bytes are what proto.Marshal makes of the
// same usagev1.Flush (fields in number order, zeros left out), which
// TestEncodeIsProto checks, with the field numbers read from the
// messages' descriptors.
var (
	flushGateway  = field(&usagev1.Flush{}, "gateway")
	flushRegion   = field(&usagev1.Flush{}, "region")
	flushBoot     = field(&usagev1.Flush{}, "boot")
	flushSequence = field(&usagev1.Flush{}, "sequence")
	flushRows     = field(&usagev1.Flush{}, "rows")
	flushDropped  = field(&usagev1.Flush{}, "dropped")

	rowProject    = field(&usagev1.Row{}, "project")
	rowDeployment = field(&usagev1.Row{}, "deployment")
	rowKeyName    = field(&usagev1.Row{}, "key")
	rowMinute     = field(&usagev1.Row{}, "minute")
	rowCounts     = field(&usagev1.Row{}, "counts")
	rowLastUsed   = field(&usagev1.Row{}, "last_used_unix_nano")

	countsOK         = field(&usagev1.Counts{}, "ok")
	countsClient     = field(&usagev1.Counts{}, "client_errors")
	countsServer     = field(&usagev1.Counts{}, "server_errors")
	countsRefused    = field(&usagev1.Counts{}, "refused")
	countsPrompt     = field(&usagev1.Counts{}, "prompt_tokens")
	countsCompletion = field(&usagev1.Counts{}, "completion_tokens")
)

// field is the number of m's field name.
func field(m proto.Message, name protoreflect.Name) protowire.Number {
	fd := m.ProtoReflect().Descriptor().Fields().ByName(name)
	if fd == nil {
		panic(fmt.Sprintf("tally: %s has no field %s", m.ProtoReflect().Descriptor().FullName(), name))
	}
	return fd.Number()
}

// appendFlushHeader appends a Flush's fields before its rows.
func appendFlushHeader(b []byte, gateway, region, boot string, seq uint64) []byte {
	b = appendString(b, flushGateway, gateway)
	b = appendString(b, flushRegion, region)
	b = appendString(b, flushBoot, boot)
	return appendUint(b, flushSequence, seq)
}

// appendRow appends one element of a Flush's rows: pending row r, named
// p.
func appendRow(b []byte, p *pairKey, r *pendingRow) []byte {
	b, row := beginMessage(b, flushRows)
	b = appendString(b, rowProject, p.project)
	b = appendString(b, rowDeployment, p.deployment)
	b = appendString(b, rowKeyName, p.key)
	b = appendUint(b, rowMinute, uint64(int64(r.key.minute)*60))
	b, c := beginMessage(b, rowCounts)
	b = appendUint(b, countsOK, r.n[usage.ClassOK])
	b = appendUint(b, countsClient, r.n[usage.ClassClientError])
	b = appendUint(b, countsServer, r.n[usage.ClassServerError])
	b = appendUint(b, countsRefused, r.n[usage.ClassRefused])
	b = appendUint(b, countsPrompt, r.prompt)
	b = appendUint(b, countsCompletion, r.completion)
	b = endMessage(b, c)
	b = appendUint(b, rowLastUsed, uint64(r.last))
	return endMessage(b, row)
}

// appendString appends a string field; "" is left out, as proto3 does.
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendUint appends a uint64 or int64 (as its two's complement) field; 0
// is left out, as proto3 does.
func appendUint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// beginMessage appends the tag of a message field num and a byte for its
// length, and returns where the message starts, for endMessage.
func beginMessage(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

// endMessage sets the length of the message started at start: in the
// byte kept for it when under 128 bytes (a row is, unless its names are
// long), else moving the message to make room.
func endMessage(b []byte, start int) []byte {
	n := len(b) - start
	if n < 0x80 {
		b[start-1] = byte(n)
		return b
	}
	k := protowire.SizeVarint(uint64(n)) - 1
	b = append(b, make([]byte, k)...)
	copy(b[start+k:], b[start:start+n])
	protowire.AppendVarint(b[:start-1], uint64(n))
	return b
}
