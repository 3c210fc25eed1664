-- One JSON-RPC call per request, as the TypeScript client sends it: POST, JSON body, bearer token.
-- BENCH_METHOD names the procedure; BENCH_PARAMS is its params object, where the text
-- "$PROJECT" is replaced, request after request, by the next id of the space-separated
-- BENCH_PROJECTS (so calls spread over projects the way many users' calls do).
local method = os.getenv("BENCH_METHOD")
local params = os.getenv("BENCH_PARAMS")
local projects = {}
for id in string.gmatch(os.getenv("BENCH_PROJECTS") or "", "%S+") do
  projects[#projects + 1] = id
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

local bodies = {}
for i, project in ipairs(projects) do
  local p = string.gsub(params, "%$PROJECT", project)
  bodies[i] = '{"jsonrpc":"2.0","id":1,"method":"' .. method .. '","params":' .. p .. '}'
end
local n = 0

request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])
end
