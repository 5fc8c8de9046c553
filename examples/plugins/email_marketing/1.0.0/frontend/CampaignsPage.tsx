export default function CampaignsPage() {
  return <h1>Email campaigns</h1>;
}
