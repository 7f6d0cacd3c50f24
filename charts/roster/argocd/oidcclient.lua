-- Argo CD health of a roster.dev OidcClient: Ready is Healthy, Stalled (an invalid redirect
-- URI, a missing or foreign Secret, no issuer) Degraded, the rest Progressing.
local function condition(type)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == type then return c end
  end
  return nil
end

if obj.status == nil then
  return {status = "Progressing", message = "waiting for roster"}
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  return {status = "Progressing", message = "roster has not seen this change yet"}
end
local ready = condition("Ready") or {}
local stalled = condition("Stalled") or {}
if ready.status == "True" then
  return {status = "Healthy", message = ready.message or "registered"}
end
if stalled.status == "True" then
  return {status = "Degraded", message = ready.message or stalled.message or "stalled"}
end
return {status = "Progressing", message = ready.message or "waiting for roster"}
