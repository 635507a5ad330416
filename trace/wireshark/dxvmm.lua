-- Wireshark dissector for dxvmm's GPU-PV stream, as `dxvmm trace
-- export-pcapng` writes it (docs/trace.md): link type 147 (LINKTYPE_USER0),
-- one packet per trace record, a 24-byte pseudo-header, then the record's
-- frame (request, reply or host event) or guest memory.
--
--   tshark -X lua_script:trace/wireshark/dxvmm.lua -r trace.pcapng
--   wireshark -X lua_script:trace/wireshark/dxvmm.lua trace.pcapng
--
-- Command numbers and names are dxgkrnl's DXGK_VMBCOMMAND_* (protocol/src/
-- vmbus.rs); a test in trace/tests checks that every one of protocol's names
-- is here.

local dxvmm = Proto("dxvmm", "dxvmm GPU-PV (virtio-dxg)")

local vgpu_commands = {
	[0] = "CREATEDEVICE",
	[1] = "DESTROYDEVICE",
	[2] = "QUERYADAPTERINFO",
	[3] = "DDIQUERYADAPTERINFO",
	[4] = "CREATEALLOCATION",
	[5] = "DESTROYALLOCATION",
	[6] = "CREATECONTEXTVIRTUAL",
	[7] = "DESTROYCONTEXT",
	[8] = "CREATESYNCOBJECT",
	[9] = "CREATEPAGINGQUEUE",
	[10] = "DESTROYPAGINGQUEUE",
	[11] = "MAKERESIDENT",
	[12] = "EVICT",
	[13] = "ESCAPE",
	[14] = "OPENADAPTER",
	[15] = "CLOSEADAPTER",
	[16] = "FREEGPUVIRTUALADDRESS",
	[17] = "MAPGPUVIRTUALADDRESS",
	[18] = "RESERVEGPUVIRTUALADDRESS",
	[19] = "UPDATEGPUVIRTUALADDRESS",
	[20] = "SUBMITCOMMAND",
	[21] = "QUERYVIDEOMEMORYINFO",
	[22] = "WAITFORSYNCOBJECTFROMCPU",
	[23] = "LOCK2",
	[24] = "UNLOCK2",
	[25] = "WAITFORSYNCOBJECTFROMGPU",
	[26] = "SIGNALSYNCOBJECT",
	[27] = "SIGNALFENCENTSHAREDBYREF",
	[28] = "GETDEVICESTATE",
	[29] = "MARKDEVICEASERROR",
	[30] = "ADAPTERSTOP",
	[31] = "SETQUEUEDLIMIT",
	[32] = "OPENRESOURCE",
	[33] = "SETCONTEXTSCHEDULINGPRIORITY",
	[34] = "PRESENTHISTORYTOKEN",
	[35] = "SETREDIRECTEDFLIPFENCEVALUE",
	[36] = "GETINTERNALADAPTERINFO",
	[37] = "FLUSHHEAPTRANSITIONS",
	[38] = "BLT",
	[39] = "DDIGETSTANDARDALLOCATIONDRIVERDATA",
	[40] = "CDDGDICOMMAND",
	[41] = "QUERYALLOCATIONRESIDENCY",
	[42] = "FLUSHDEVICE",
	[43] = "FLUSHADAPTER",
	[44] = "DDIGETNODEMETADATA",
	[45] = "SETEXISTINGSYSMEMSTORE",
	[46] = "ISSYNCOBJECTSIGNALED",
	[47] = "CDDSYNCGPUACCESS",
	[48] = "QUERYSTATISTICS",
	[49] = "CHANGEVIDEOMEMORYRESERVATION",
	[50] = "CREATEHWQUEUE",
	[51] = "DESTROYHWQUEUE",
	[52] = "SUBMITCOMMANDTOHWQUEUE",
	[53] = "GETDRIVERSTOREFILE",
	[54] = "READDRIVERSTOREFILE",
	[55] = "GETNEXTHARDLINK",
	[56] = "UPDATEALLOCATIONPROPERTY",
	[57] = "OFFERALLOCATIONS",
	[58] = "RECLAIMALLOCATIONS",
	[59] = "SETALLOCATIONPRIORITY",
	[60] = "GETALLOCATIONPRIORITY",
	[61] = "GETCONTEXTSCHEDULINGPRIORITY",
	[62] = "QUERYCLOCKCALIBRATION",
	[64] = "QUERYRESOURCEINFO",
	[65] = "LOGEVENT",
	[66] = "SETEXISTINGSYSMEMPAGES",
	[67] = "INVALIDATECACHE",
	[68] = "ISFEATUREENABLED",
}

local global_commands = {
	[1000] = "CREATEPROCESS",
	[1001] = "DESTROYPROCESS",
	[1002] = "OPENSYNCOBJECT",
	[1003] = "DESTROYSYNCOBJECT",
	[1004] = "CREATENTSHAREDOBJECT",
	[1005] = "DESTROYNTSHAREDOBJECT",
	[1006] = "SIGNALFENCE",
	[1007] = "NOTIFYPROCESSFREEZE",
	[1008] = "NOTIFYPROCESSTHAW",
	[1009] = "QUERYETWSESSION",
	[1010] = "SETIOSPACEREGION",
	[1011] = "COMPLETETRANSACTION",
	[1021] = "SHAREOBJECTWITHHOST",
	[1022] = "ISFEATUREENABLED_GLOBAL",
}

local host_commands = {
	[0] = "SIGNALGUESTEVENT",
	[1] = "PROPAGATEPRESENTHISTORYTOKEN",
	[2] = "SETGUESTDATA",
	[3] = "SIGNALGUESTEVENTPASSIVE",
	[4] = "SENDWNFNOTIFICATION",
}

local statuses = {
	[0x00000000] = "STATUS_SUCCESS",
	[0x00000102] = "STATUS_TIMEOUT",
	[0x00000103] = "STATUS_PENDING",
	[0x80000005] = "STATUS_BUFFER_OVERFLOW",
	[0xC0000001] = "STATUS_UNSUCCESSFUL",
	[0xC0000002] = "STATUS_NOT_IMPLEMENTED",
	[0xC0000008] = "STATUS_INVALID_HANDLE",
	[0xC000000D] = "STATUS_INVALID_PARAMETER",
	[0xC0000010] = "STATUS_INVALID_DEVICE_REQUEST",
	[0xC0000017] = "STATUS_NO_MEMORY",
	[0xC000001D] = "STATUS_ILLEGAL_INSTRUCTION",
	[0xC0000022] = "STATUS_ACCESS_DENIED",
	[0xC0000023] = "STATUS_BUFFER_TOO_SMALL",
	[0xC0000024] = "STATUS_OBJECT_TYPE_MISMATCH",
	[0xC0000033] = "STATUS_OBJECT_NAME_INVALID",
	[0xC0000034] = "STATUS_OBJECT_NAME_NOT_FOUND",
	[0xC0000035] = "STATUS_OBJECT_NAME_COLLISION",
	[0xC0000095] = "STATUS_INTEGER_OVERFLOW",
	[0xC000009A] = "STATUS_INSUFFICIENT_RESOURCES",
	[0xC00000BB] = "STATUS_NOT_SUPPORTED",
	[0xC0000120] = "STATUS_CANCELLED",
	[0xC00002B6] = "STATUS_DEVICE_REMOVED",
	[0xC01E0100] = "STATUS_GRAPHICS_NO_VIDEO_MEMORY",
	[0xC01E0102] = "STATUS_GRAPHICS_ALLOCATION_BUSY",
}

local kinds = { [1] = "request", [2] = "reply", [3] = "event", [4] = "memory" }
local channels = { [0] = "vGPU to host", [1] = "VM to host", [2] = "host to VM" }
local purposes = { [0] = "input", [1] = "result", [2] = "result digest" }

local f = dxvmm.fields
f.version = ProtoField.uint8("dxvmm.pseudo.version", "Pseudo-header version")
f.kind = ProtoField.uint8("dxvmm.kind", "Record kind", base.DEC, kinds)
f.purpose = ProtoField.uint8("dxvmm.purpose", "Memory purpose", base.DEC, purposes)
f.process = ProtoField.uint32("dxvmm.process", "Process", base.HEX)
f.index = ProtoField.uint64("dxvmm.index", "Record index")
f.channel = ProtoField.uint32("dxvmm.channel", "Channel", base.DEC, channels)
f.command = ProtoField.uint32("dxvmm.command", "Command number")
f.command_name = ProtoField.string("dxvmm.command_name", "Command")
f.magic = ProtoField.uint32("dxvmm.frame.magic", "Frame magic", base.HEX)
f.frame_version = ProtoField.uint16("dxvmm.frame.version", "Frame version")
f.flags = ProtoField.uint16("dxvmm.frame.flags", "Frame flags", base.HEX)
f.request_id = ProtoField.uint64("dxvmm.frame.request_id", "Request id")
f.payload_len = ProtoField.uint32("dxvmm.frame.payload_len", "Payload length")
f.status = ProtoField.uint32("dxvmm.frame.status", "Frame status", base.HEX, statuses)
f.vgpu_luid = ProtoField.string("dxvmm.frame.vgpu_luid", "vGPU LUID")
f.cmd_id = ProtoField.uint64("dxvmm.cmd.command_id", "Command id")
f.cmd_process = ProtoField.uint32("dxvmm.cmd.process", "Process", base.HEX)
f.cmd_channel = ProtoField.uint32("dxvmm.cmd.channel_type", "Channel type", base.HEX)
f.cmd_type = ProtoField.uint32("dxvmm.cmd.command_type", "Command type")
f.gpa = ProtoField.uint64("dxvmm.memory.gpa", "Guest physical address", base.HEX)
f.digest_len = ProtoField.uint64("dxvmm.memory.length", "Bytes covered by the digest")
f.digest = ProtoField.bytes("dxvmm.memory.digest", "Digest (XXH3-128 of the page hashes, little endian)")
f.data = ProtoField.bytes("dxvmm.data", "Data")

local function command_name(channel, command)
	local t = nil
	if channel == 0 then
		t = vgpu_commands
	elseif channel == 1 then
		t = global_commands
	elseif channel == 2 then
		t = host_commands
	end
	local n = t and t[command]
	if n then
		return n
	end
	return string.format("command %d (channel %d)", command, channel)
end

local function dissect_frame(buf, tree, kind)
	if buf:len() < 32 then
		tree:add(f.data, buf())
		return nil, nil
	end
	local fr = tree:add(buf(0, 32), "Frame header")
	fr:add_le(f.magic, buf(0, 4))
	fr:add_le(f.frame_version, buf(4, 2))
	fr:add_le(f.flags, buf(6, 2))
	fr:add_le(f.request_id, buf(8, 8))
	fr:add_le(f.payload_len, buf(16, 4))
	fr:add_le(f.status, buf(20, 4))
	fr:add(f.vgpu_luid, buf(24, 8),
		string.format("%08x:%08x", buf(28, 4):le_uint(), buf(24, 4):le_uint()))
	local request_id = buf(8, 8):le_uint64()
	local status = buf(20, 4):le_uint()
	local payload = buf:len() - 32
	if payload > 0 then
		local p = buf(32, payload)
		local pt = tree:add(p, "Payload")
		-- Requests and events start with a command header; replies do not.
		if kind ~= 2 and payload >= 24 then
			local h = pt:add(buf(32, 24), "Command header")
			h:add_le(f.cmd_id, buf(32, 8))
			h:add_le(f.cmd_process, buf(40, 4))
			h:add_le(f.cmd_channel, buf(44, 4))
			h:add_le(f.cmd_type, buf(48, 4))
		end
		pt:add(f.data, p)
	end
	return request_id, status
end

function dxvmm.dissector(buf, pinfo, tree)
	if buf:len() < 24 then
		return 0
	end
	pinfo.cols.protocol = "DXVMM"
	local t = tree:add(dxvmm, buf(), "dxvmm GPU-PV")
	local kind = buf(1, 1):uint()
	local channel = buf(16, 4):le_uint()
	local command = buf(20, 4):le_uint()
	local p = t:add(buf(0, 24), "Pseudo-header")
	p:add(f.version, buf(0, 1))
	p:add(f.kind, buf(1, 1))
	p:add(f.purpose, buf(2, 1))
	p:add_le(f.process, buf(4, 4))
	p:add_le(f.index, buf(8, 8))
	p:add_le(f.channel, buf(16, 4))
	p:add_le(f.command, buf(20, 4))
	local rest = buf(24)
	if kind == 4 then
		local purpose = buf(2, 1):uint()
		t:add(f.command_name, "memory " .. (purposes[purpose] or "?"))
		if purpose == 2 and rest:len() >= 32 then
			-- A result recorded as a digest: address, length, digest.
			t:add_le(f.gpa, buf(24, 8))
			t:add_le(f.digest_len, buf(32, 8))
			t:add(f.digest, buf(40, 16))
			pinfo.cols.info = string.format("memory result digest at 0x%x, %d bytes",
				buf(24, 8):le_uint64():tonumber(), buf(32, 8):le_uint64():tonumber())
		elseif rest:len() >= 8 then
			t:add_le(f.gpa, buf(24, 8))
			pinfo.cols.info = string.format("memory %s at 0x%x, %d bytes",
				purposes[buf(2, 1):uint()] or "?", buf(24, 8):le_uint64():tonumber(), rest:len() - 8)
			if rest:len() > 8 then
				t:add(f.data, buf(32))
			end
		end
		return buf:len()
	end
	local name = command_name(channel, command)
	t:add(f.command_name, name)
	local request_id, status = dissect_frame(rest:tvb(), t, kind)
	local info = string.format("%s %s", kinds[kind] or "?", name)
	if request_id then
		info = info .. string.format(" id=%s", tostring(request_id))
	end
	if kind == 2 and status then
		info = info .. " " .. (statuses[status] or string.format("0x%08X", status))
	end
	pinfo.cols.info = info
	return buf:len()
end

local encap = (wtap_encaps and wtap_encaps.USER0) or wtap.USER0
DissectorTable.get("wtap_encap"):add(encap, dxvmm)
