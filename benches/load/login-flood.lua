-- wrk script for benches/login-flood.sh: wrong passwords to the JSON login API, each connection
-- pausing FLOOD_DELAY_MS after every answer, and the answers counted by status.
-- Prints one "status CODE COUNT" line per status when done.

wrk.method = "POST"
wrk.path = "/.wardgate/api/login"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user":"flood","password":"Not the password 7 times!"}'

local pause = tonumber(os.getenv("FLOOD_DELAY_MS") or "0")
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function delay()
    return pause
end

-- Global: done() reads it from each thread with thread:get.
statuses = {}

function response(status)
    statuses[status] = (statuses[status] or 0) + 1
end

function done()
    local total = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            total[status] = (total[status] or 0) + count
        end
    end
    for status, count in pairs(total) do
        io.write(string.format("status %d %d\n", status, count))
    end
end
